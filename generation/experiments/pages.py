"""Experiment pages. Sweeps: the list, the form ("Show cost" before starting), one sweep's grid that fills in live
(htmx polling while a cell is queued or running), cancel, and the contact sheet. A/B tests: the list, the form (cost
first), the results (live the same way while a job is queued or running), and the blind vote. Every lookup starts
from the caller's membership: another workspace's sweep or test is a 404."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from generation.experiments import abtests, selectors, stats, sweeps
from generation.experiments.forms import ABTestForm, SweepForm, VoteForm
from lorasite.errors import ApplicationError
from lorasite.object_store import get_object_store
from workspaces.models import Membership, Role
from workspaces.selectors import membership_for_user


def _context(membership: Membership, **extra) -> dict:
    return {
        "membership": membership,
        "workspace": membership.workspace,
        "can_run": membership.has_role(Role.MEMBER),
        **extra,
    }


def _cost_or_start(request: HttpRequest, form, *, create, started) -> HttpResponse | tuple[int | None, str, int]:
    """The sweep and A/B forms: a POST with `preview` runs every check as a dry run and answers the cost (jobs);
    without it, starts and redirects (`started(created)`). Otherwise (cost, error, status) to render the form with:
    a GET is (None, "", 200), an invalid form or a refused create a 400-class status with the service's message."""
    if request.method != "POST":
        return None, "", 200
    if not form.is_valid():
        return None, "", 400
    dry_run = "preview" in request.POST
    try:
        created, cost = create(dry_run)
    except ApplicationError as exc:
        return None, exc.message, exc.status_code
    return (cost, "", 200) if dry_run else started(created)


def _live_page(request: HttpRequest, *, page: str, part: str, context: dict) -> HttpResponse:
    """A page with a live part that polls the page's own URL (templates/generation/experiments/_live.html): an
    htmx request gets the part alone, any other the whole page."""
    response = render(request, part if request.htmx else page, context)
    patch_vary_headers(response, ("HX-Request",))  # the same URL answers a page or its part
    return response


@login_required
@require_GET
def sweep_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    sweep_rows = selectors.sweep_list(workspace=membership.workspace)[:50]
    return render(request, "generation/experiments/sweeps.html", _context(membership, sweeps=sweep_rows))


@login_required
@require_http_methods(["GET", "POST"])
def sweep_new(request: HttpRequest, slug: str) -> HttpResponse:
    """GET ?lora=<id> pre-picks the LoRA. POST with `preview` runs every check as a dry run and shows the cost;
    without it, starts the sweep and goes to its page."""
    membership = membership_for_user(user=request.user, slug=slug)
    if not membership.has_role(Role.MEMBER):  # the service refuses too; this makes it a plain 403 page
        raise PermissionDenied
    loras = selectors.sweep_lora_choices(workspace=membership.workspace)
    versions = selectors.lora_version_ids(loras=loras)
    initial = {"lora": request.GET.get("lora")} if request.GET.get("lora", "").isdigit() else {}
    form = SweepForm(
        request.POST if request.method == "POST" else None, loras=loras, versions=versions, initial=initial
    )
    outcome = _cost_or_start(
        request,
        form,
        create=lambda dry_run: sweeps.sweep_create(actor=membership, dry_run=dry_run, **form.sweep_input()),
        started=lambda sweep: redirect("studio:sweep", slug=slug, sweep_id=sweep.id),
    )
    if isinstance(outcome, HttpResponse):
        return outcome
    cost, error, status = outcome
    context = _context(membership, form=form, cost=cost, error=error, limit=settings.LORASITE_SWEEP_MAX_CELLS)
    return render(request, "generation/experiments/sweep_new.html", context, status=status)


@login_required
@require_GET
def sweep_detail(request: HttpRequest, slug: str, sweep_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    grid = selectors.sweep_grid(sweep=selectors.sweep_get(workspace=membership.workspace, sweep_id=sweep_id))
    return _live_page(
        request,
        page="generation/experiments/sweep.html",
        part="generation/experiments/_sweep_grid.html",
        context=_context(membership, grid=grid),
    )


@login_required
@require_POST
def sweep_cancel(request: HttpRequest, slug: str, sweep_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    sweep = selectors.sweep_get(workspace=membership.workspace, sweep_id=sweep_id)
    try:
        cancelled = sweeps.sweep_cancel(actor=membership, sweep=sweep)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Cancelled {cancelled} cell{'s' if cancelled != 1 else ''}.")
    return redirect("studio:sweep", slug=slug, sweep_id=sweep.id)


@login_required
@require_GET
def sweep_contact_sheet(request: HttpRequest, slug: str, sweep_id: int) -> HttpResponse:
    """Redirects to the contact sheet's signed URL (made on the first request once every cell has finished)."""
    membership = membership_for_user(user=request.user, slug=slug)
    sweep = selectors.sweep_get(workspace=membership.workspace, sweep_id=sweep_id)
    try:
        key = sweeps.sweep_contact_sheet(sweep=sweep)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("studio:sweep", slug=slug, sweep_id=sweep.id)
    url = get_object_store().download_url(
        key, filename=f"sweep-{sweep.id}.png", expires_in=settings.LORASITE_SIGNED_URL_SECONDS
    )
    return redirect(url)


# --- A/B tests ------------------------------------------------------------------------------------------------


@login_required
@require_GET
def abtest_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    tests = selectors.abtest_list(workspace=membership.workspace)[:50]
    return render(request, "generation/experiments/abtests.html", _context(membership, tests=tests))


@login_required
@require_http_methods(["GET", "POST"])
def abtest_new(request: HttpRequest, slug: str) -> HttpResponse:
    """GET ?a=<id>&b=<id> pre-fills the two LoRAs (the compare page's "Quick A/B test"). POST with `preview`
    runs every check as a dry run and shows the cost; without it, starts the test."""
    membership = membership_for_user(user=request.user, slug=slug)
    if not membership.has_role(Role.MEMBER):
        raise PermissionDenied
    loras = selectors.sweep_lora_choices(workspace=membership.workspace)
    initial = {field: request.GET[key] for key, field in (("a", "lora_a"), ("b", "lora_b")) if key in request.GET}
    form = ABTestForm(request.POST if request.method == "POST" else None, loras=loras, initial=initial)
    outcome = _cost_or_start(
        request,
        form,
        create=lambda dry_run: abtests.abtest_create(actor=membership, dry_run=dry_run, **form.abtest_input()),
        started=lambda test: redirect("studio:abtest", slug=slug, test_id=test.id),
    )
    if isinstance(outcome, HttpResponse):
        return outcome
    cost, error, status = outcome
    context = _context(membership, form=form, cost=cost, error=error, limit=settings.LORASITE_ABTEST_MAX_JOBS)
    return render(request, "generation/experiments/abtest_new.html", context, status=status)


@login_required
@require_GET
def abtest_detail(request: HttpRequest, slug: str, test_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    results = selectors.abtest_results(test=selectors.abtest_get(workspace=membership.workspace, test_id=test_id))
    return _live_page(
        request,
        page="generation/experiments/abtest.html",
        part="generation/experiments/_abtest_results.html",
        context=_context(membership, results=results, alpha=stats.ALPHA, minimum=selectors.MIN_DECISIVE_VOTES),
    )


@login_required
@require_http_methods(["GET", "POST"])
def abtest_vote(request: HttpRequest, slug: str, test_id: int) -> HttpResponse:
    """One pair at a time, side by side without names: the member's first ready pair without their vote (or
    ?pair=<id>). A vote goes on to the next one."""
    membership = membership_for_user(user=request.user, slug=slug)
    test = selectors.abtest_get(workspace=membership.workspace, test_id=test_id)
    if request.method == "POST":
        form = VoteForm(request.POST)
        if not form.is_valid():
            messages.error(request, "A vote is left, right or tie.")
        else:
            try:
                pair = selectors.abpair_get(test=test, pair_id=form.cleaned_data["pair"])
                abtests.abvote_set(actor=membership, pair=pair, side=form.cleaned_data["choice"])
            except ApplicationError as exc:
                messages.error(request, exc.message)
        return redirect("studio:abtest-vote", slug=slug, test_id=test.id)
    pairs = selectors.abtest_blind_pairs(test=test, user=request.user)
    wanted = request.GET.get("pair", "")
    current = next((p for p in pairs if str(p.pair.id) == wanted), None) or next(
        (p for p in pairs if p.ready and not p.my_side), None
    )
    context = _context(
        membership,
        test=test,
        current=current,
        voted=sum(bool(p.my_side) for p in pairs),
        ready=sum(p.ready for p in pairs),
        total=len(pairs),
    )
    return render(request, "generation/experiments/abtest_vote.html", context)
