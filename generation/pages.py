"""Server-rendered generation pages: the Generate form, the jobs list, a job's page, and the operator page of the
GPU workers.

htmx requests (a model switch, a poll) get the page's live partial instead of the whole page."""

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from generation import selectors, services, worker_selectors
from generation.forms import GenerateForm, model_for
from generation.recipes.selectors import recipe_generate_query
from lorasite.errors import ApplicationError, InvalidInput, NotFound
from workspaces.models import Membership, Role
from workspaces.selectors import membership_for_user


def _render(request: HttpRequest, full: str, partial: str, context: dict, status: int = 200) -> HttpResponse:
    membership: Membership = context["membership"]
    context = {**context, "workspace": membership.workspace, "can_run": membership.has_role(Role.MEMBER)}
    response = render(request, partial if request.htmx else full, context, status=status)
    patch_vary_headers(response, ("HX-Request",))  # the same URL answers a page or a partial
    return response


@login_required
@require_http_methods(["GET", "POST"])
def generate(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    posted = request.POST if request.method == "POST" else None
    query = recipe_generate_query(workspace=membership.workspace, query=request.GET)  # ?recipe=<id> fills the form
    model = model_for((posted or query).get("model"))
    choices = selectors.lora_choices(workspace=membership.workspace, model=model)
    form = GenerateForm(posted, model=model, choices=choices, carry=query if posted is None else None)
    status = 200
    if posted is not None:
        status = 400
        if form.is_valid():
            try:
                job = services.generation_create(actor=membership, **form.job_input())
            except ApplicationError as error:
                form.add_service_error(error)
                status = error.status_code
            else:
                # No flash: the job page shows "Queued" as the job's live state, which a flash would outlive.
                return redirect("studio:job", slug=slug, job_id=job.id)
    pairs = selectors.pair_choices(workspace=membership.workspace, model=model, choices=choices)
    context = {"membership": membership, "form": form, "model": model, "pair_choices": pairs}
    return _render(request, "generation/generate.html", "generation/_generate_fields.html", context, status)


@login_required
def jobs(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    job_page = selectors.job_card_page(workspace=membership.workspace, page_number=request.GET.get("page"))
    return _render(
        request, "generation/jobs.html", "generation/_job_list.html", {"membership": membership, "jobs": job_page}
    )


@login_required
def job_detail(request: HttpRequest, slug: str, job_id: UUID) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    card = selectors.job_card_get(workspace=membership.workspace, job_id=job_id, with_download=True)
    return _render(
        request, "generation/job_detail.html", "generation/_job_live.html", {"membership": membership, "card": card}
    )


def _back(request: HttpRequest, slug: str, job_id: UUID) -> HttpResponse:
    """To the page the button was on (a same-site path only), else the job's page."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect("studio:job", slug=slug, job_id=job_id)


@login_required
@require_POST
def job_cancel(request: HttpRequest, slug: str, job_id: UUID) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    job = selectors.job_get(workspace=membership.workspace, job_id=job_id)
    try:
        job = services.generation_cancel(actor=membership, job=job)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        if job.is_finished:  # a running job shows "cancelling" in its live status until its worker stops
            messages.success(request, "Job cancelled.")
    return _back(request, slug, job_id)


@login_required
@require_POST
def job_retry(request: HttpRequest, slug: str, job_id: UUID) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    job = selectors.job_get(workspace=membership.workspace, job_id=job_id)
    try:
        retry = services.generation_retry(actor=membership, job=job)
    except ApplicationError as error:
        messages.error(request, f"Could not retry: {error.message}")
        return _back(request, slug, job_id)
    return redirect("studio:job", slug=slug, job_id=retry.id)  # its page says "Queued" and "Retry of"


@login_required
@require_http_methods(["GET", "POST"])
def what_made_this(request: HttpRequest, slug: str) -> HttpResponse:
    """Upload an output image, get its recipe back (a plain form post: the file is read, never stored)."""
    membership = membership_for_user(user=request.user, slug=slug)
    context = {"membership": membership, "workspace": membership.workspace, "recipe": None, "error": ""}
    status = 200
    if request.method == "POST":
        upload = request.FILES.get("file")
        try:
            if upload is None:
                raise InvalidInput("Choose an output image (PNG) first.")
            context["recipe"] = selectors.provenance_recipe(workspace=membership.workspace, upload=upload)
        except ApplicationError as error:
            context["error"], status = error.message, error.status_code
    return render(request, "generation/what_made_this.html", context, status=status)


@login_required
def workers(request: HttpRequest) -> HttpResponse:
    """The operator page (staff only; for anyone else it does not exist): the live GPU workers, polled."""
    if not request.user.is_staff:
        raise NotFound("Page not found.")
    context = {"overview": worker_selectors.workers_overview()}
    response = render(request, "generation/_workers_live.html" if request.htmx else "generation/workers.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response
