"""Dashboard actions on previews: upload or remove one on a LoRA's page, "Use as preview" on a job page, and the
workspace's auto preview switch on its settings page.
Plain form posts (they work without JavaScript) that say what happened as a message on the page they go back to."""

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from loras import previews, selectors
from lorasite.errors import ApplicationError, InvalidInput
from workspaces.selectors import membership_for_user
from workspaces.services import workspace_update


def _detail(slug: str, lora_id: int) -> HttpResponse:
    return redirect(reverse("library:detail", kwargs={"slug": slug, "lora_id": lora_id}) + "#preview")


@login_required
@require_POST
def preview_upload(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_get(workspace=membership.workspace, lora_id=lora_id)
    try:
        if "file" not in request.FILES:
            raise InvalidInput("Choose an image or video file first.")
        previews.lora_preview_upload(actor=membership, lora=lora, uploaded_file=request.FILES["file"])
    except ApplicationError as error:
        messages.error(request, f"The preview was not changed: {error.message}")
    else:
        messages.success(request, "Preview saved.")
    return _detail(slug, lora_id)


@login_required
@require_POST
def preview_remove(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_get(workspace=membership.workspace, lora_id=lora_id)
    try:
        previews.lora_preview_delete(actor=membership, lora=lora)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Preview removed.")
    return _detail(slug, lora_id)


@login_required
@require_POST
def preview_from_job(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    """Back to the job's page, saying whether its output is now the preview."""
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_get(workspace=membership.workspace, lora_id=lora_id)
    try:
        job_id = uuid.UUID(request.POST.get("job_id", ""))
    except ValueError:
        messages.error(request, "No job was named.")
        return _detail(slug, lora_id)
    try:
        previews.lora_preview_from_job(actor=membership, lora=lora, job_id=job_id)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"This output is now the preview of “{lora.name}”.")
    return redirect("studio:job", slug=slug, job_id=job_id)


@login_required
@require_POST
def auto_preview_setting(request: HttpRequest, slug: str) -> HttpResponse:
    """The workspace settings page's auto preview switch."""
    membership = membership_for_user(user=request.user, slug=slug)
    enabled = request.POST.get("auto_preview") == "true"
    try:
        workspace_update(actor=membership, auto_preview=enabled)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Auto preview is on." if enabled else "Auto preview is off.")
    return redirect(reverse("dashboard:settings", kwargs={"slug": slug}) + "#auto-preview")
