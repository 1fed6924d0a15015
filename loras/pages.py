"""Server-rendered LoRA library pages: the card grid (search, filters, sort, upload) and a LoRA's
detail page with inline edits. Every lookup starts from the caller's membership, so another
workspace's URL is a 404. Uploads go through the JSON API from static/js/upload.js."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from generation.recipes.selectors import recipe_list
from loras import selectors, services
from loras.filters import LoRAFilterSet
from loras.forms import BULK_ACTIONS, SECTION_FORMS, BulkForm, PairForm
from loras.models import LoRA
from lorasite.errors import ApplicationError, NotFound
from lorasite.forms import show_service_error
from workspaces.models import Membership
from workspaces.selectors import membership_for_user

PAGE_SIZE = 24
LIBRARY_VIEWS = ("grid", "list")
VIEW_COOKIE = "library_view"
SAVED_MESSAGES = {
    "name": "Renamed.",
    "details": "Details saved.",
    "active": "Saved.",
    "triggers": "Trigger words saved.",
    "recommended": "Recommended settings saved.",
}


def _page_context(membership: Membership, **extra) -> dict:
    return {"membership": membership, "workspace": membership.workspace, **extra}


def _require_editor(membership: Membership, lora: LoRA) -> None:
    # The service enforces the rule as well; checking first turns a refusal into a plain 403
    # before any form is parsed.
    if not selectors.lora_can_edit(actor=membership, lora=lora):
        raise PermissionDenied


@login_required
@require_GET
@vary_on_headers("HX-Request", "HX-Target")  # the same URL answers with the page or with just the results
def library(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    # A hand-edited bad value is left out and named next to its field; the page never fails on a URL.
    filterset = LoRAFilterSet(request.GET)
    loras = selectors.lora_library(workspace=membership.workspace, filters=filterset.valid_data())
    # The grid or the compact list: the query string says, else the last choice (a cookie).
    view = request.GET.get("view") or request.COOKIES.get(VIEW_COOKIE)
    view = view if view in LIBRARY_VIEWS else LIBRARY_VIEWS[0]
    can_bulk = selectors.lora_can_upload(actor=membership)  # members edit their own LoRAs; the service checks each
    context = _page_context(
        membership,
        form=filterset.form,
        narrows=filterset.narrows,
        page=Paginator(loras, PAGE_SIZE).get_page(request.GET.get("page")),
        can_upload=selectors.lora_can_upload(actor=membership),
        can_bulk=can_bulk,
        view=view,
        bulk_actions=BULK_ACTIONS,
        recipes=recipe_list(workspace=membership.workspace)
        .select_related(None)
        .prefetch_related(None)
        .only("id", "name")
        if can_bulk
        else [],
    )
    if request.htmx and request.htmx.target == "library-results":  # the filter form's live update
        response = render(request, "loras/_results.html", context)
    else:
        context.update(tags=selectors.lora_tags(workspace=membership.workspace))
        response = render(request, "loras/library.html", context)
    if request.GET.get("view") == view:
        response.set_cookie(VIEW_COOKIE, view, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
    return response


@login_required
@require_GET
def lora_card(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    """One card: polled while the LoRA is processing, and fetched by the uploader for a new LoRA."""
    membership = membership_for_user(user=request.user, slug=slug)
    dropped = selectors.lora_dropped_duplicate(workspace=membership.workspace, lora_id=lora_id)
    if dropped is not None:  # the uploader's row says so and links the original; the grid drops the card
        return render(request, "loras/_dropped_duplicate.html", _page_context(membership, lora=dropped))
    lora = selectors.lora_library_get(workspace=membership.workspace, lora_id=lora_id)
    context = _page_context(membership, lora=lora, can_bulk=selectors.lora_can_upload(actor=membership))
    return render(request, "loras/_card.html", context)


def _detail_context(membership: Membership, lora: LoRA, *, editing: dict[str, Form] | None = None) -> dict:
    return _page_context(
        membership,
        lora=lora,
        editing=editing or {},
        can_edit=selectors.lora_can_edit(actor=membership, lora=lora),
        job_uses=selectors.lora_job_uses(lora=lora),
        pair=lora.pair,
        proposal=selectors.lora_proposed_partner(lora=lora),
        fits=selectors.lora_fits(lora=lora),
        same_weights=selectors.lora_same_weights(lora=lora),
        purge_after_days=settings.LORASITE_PURGE_AFTER_DAYS,
    )


@login_required
@require_GET
def lora_detail(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_library_get(workspace=membership.workspace, lora_id=lora_id)
    return render(request, "loras/detail.html", _detail_context(membership, lora))


def _render_section(
    request: HttpRequest,
    membership: Membership,
    lora: LoRA,
    section: str,
    *,
    form: Form | None = None,
    status: int = 200,
    **flags: bool,
) -> HttpResponse:
    """One editable part of the detail page for htmx to swap; without htmx (no JavaScript) the
    whole page, with that part open when there is a form."""
    if request.htmx:
        context = _page_context(
            membership, lora=lora, form=form, can_edit=selectors.lora_can_edit(actor=membership, lora=lora), **flags
        )
        return render(request, f"loras/_{section}.html", context, status=status)
    editing = {section: form} if form is not None else None
    return render(request, "loras/detail.html", _detail_context(membership, lora, editing=editing), status=status)


@login_required
@require_GET
def lora_section_editor(request: HttpRequest, slug: str, lora_id: int, section: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_library_get(workspace=membership.workspace, lora_id=lora_id)
    _require_editor(membership, lora)
    return _render_section(request, membership, lora, section, form=SECTION_FORMS[section].for_lora(lora))


@login_required
@require_http_methods(["GET", "POST"])
def lora_section(request: HttpRequest, slug: str, lora_id: int, section: str) -> HttpResponse:
    """GET: the part as shown (what Cancel and Escape go back to). POST: save it with `lora_update`;
    errors, the service's included, are shown next to their field."""
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_library_get(workspace=membership.workspace, lora_id=lora_id)
    if request.method == "GET":
        return _render_section(request, membership, lora, section, focus=True)
    _require_editor(membership, lora)
    form = SECTION_FORMS[section](request.POST)
    if form.is_valid():
        try:
            lora = services.lora_update(actor=membership, lora=lora, **form.cleaned_data)
        except ApplicationError as error:
            show_service_error(form, error)
        else:
            if not request.htmx:  # no JavaScript yet (or at all): the whole page, saying the same as the part would
                messages.success(request, SAVED_MESSAGES[section])
                return redirect("library:detail", slug=slug, lora_id=lora.id)
            return _render_section(request, membership, lora, section, focus=True, saved=True)
    return _render_section(request, membership, lora, section, form=form, status=400)


@login_required
@require_POST
def lora_delete(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_get(workspace=membership.workspace, lora_id=lora_id)
    _require_editor(membership, lora)
    pair = lora.pair
    try:
        deleted = services.lora_soft_delete(actor=membership, lora=lora, pair_action=request.POST.get("pair") or None)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("library:detail", slug=slug, lora_id=lora.id)
    if len(deleted) == 2:
        messages.success(request, f"Both halves of the pair “{pair.name}” were deleted.")
    else:
        messages.success(
            request,
            f"“{lora.name}” version {lora.version} was deleted"
            + (f" and the pair “{pair.name}” unpaired." if pair else "."),
        )
    return redirect("library:list", slug=slug)


@login_required
@require_GET
def lora_download(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    """Redirect to a signed URL for the file (S3 presigned, or the app's signed endpoint)."""
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_get(workspace=membership.workspace, lora_id=lora_id)
    url, _expires_at = selectors.lora_download_url(lora=lora)
    return redirect(url)


# --- pairs and bulk actions ---------------------------------------------------------------------------


@login_required
@require_POST
def pair_create(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    """ "Pair with X" on the detail page: this LoRA and the partner the form names, each in the role it was proposed
    in (the service refuses a contradiction)."""
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_get(workspace=membership.workspace, lora_id=lora_id)
    form = PairForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose the partner and its role.")
        return redirect("library:detail", slug=slug, lora_id=lora.id)
    partner = selectors.lora_get(workspace=membership.workspace, lora_id=form.cleaned_data["partner"])
    high, low = (lora, partner) if form.cleaned_data["role"] == "high" else (partner, lora)
    try:
        pair = services.pair_create(actor=membership, high=high, low=low)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Paired as “{pair.name}”: {high.name} (high noise) and {low.name} (low noise).")
    return redirect("library:detail", slug=slug, lora_id=lora.id)


@login_required
@require_POST
def pair_unpair(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_get(workspace=membership.workspace, lora_id=lora_id)
    pair = lora.pair
    if pair is None:
        messages.error(request, f"“{lora.name}” is not paired.")
    else:
        try:
            services.pair_delete(actor=membership, pair=pair)
        except ApplicationError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"The pair “{pair.name}” was unpaired; both LoRAs stay in the library.")
    return redirect("library:detail", slug=slug, lora_id=lora.id)


@login_required
@require_POST
def bulk_action(request: HttpRequest, slug: str) -> HttpResponse:
    """The library's multi-select bar. Delete asks once, on a page listing what goes (`confirmed` then set)."""
    membership = membership_for_user(user=request.user, slug=slug)
    form = BulkForm(request.POST)
    back = request.POST.get("next") or ""
    back = back if back.startswith(f"/w/{slug}/loras/") else f"/w/{slug}/loras/"
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect(back)
    data = form.cleaned_data
    try:
        if data["action"] == "delete":
            if not data["confirmed"]:
                loras = selectors.lora_selection(workspace=membership.workspace, lora_ids=data["ids"])
                context = _page_context(membership, loras=loras, ids=data["ids"], back=back)
                return render(request, "loras/bulk_delete.html", context)
            changed = services.lora_bulk_delete(actor=membership, lora_ids=data["ids"])
            messages.success(request, f"{changed} LoRA{pluralize(changed)} deleted.")
        elif data["action"] == "add_to_recipe":
            changed = services.lora_bulk_add_to_recipe(actor=membership, lora_ids=data["ids"], recipe_id=data["recipe"])
            messages.success(request, f"Added {changed} LoRA{pluralize(changed)} to the recipe.")
        else:
            changed = services.lora_bulk_update(
                actor=membership, lora_ids=data["ids"], action=data["action"], tags=data["tags"]
            )
            label = dict(BULK_ACTIONS)[data["action"]]
            messages.success(request, f"{label}: {changed} LoRA{pluralize(changed)} changed.")
    except ApplicationError as error:
        if isinstance(error, NotFound):
            raise
        messages.error(request, error.message)
    return redirect(back)
