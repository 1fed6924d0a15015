"""The Configuration tab's editor: GET the training record's form, POST it (editors only — the service checks the
role too). htmx swaps the tab's card; without JavaScript the whole LoRA page comes back with the editor open, and a
save goes back to the page. A 400 keeps the form and its errors in place."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from loras import selectors, services
from loras.forms import TrainingRecordForm
from lorasite.errors import ApplicationError
from workspaces.selectors import membership_for_user


@login_required
@require_http_methods(["GET", "POST"])
def training_record_edit(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_library_get(workspace=membership.workspace, lora_id=lora_id)
    if not selectors.lora_can_edit(actor=membership, lora=lora):
        raise PermissionDenied
    status = 200
    if request.method == "POST":
        form = TrainingRecordForm(request.POST)
        status = 400
        if form.is_valid():
            try:
                lora = services.lora_update(actor=membership, lora=lora, training=form.record())
            except ApplicationError as error:
                for field, problems in error.errors.items():
                    name = field.split(".")[1] if field.count(".") >= 1 else None
                    form.add_error(name if name in form.fields else "hyperparameters", problems)
                if not error.errors:
                    form.add_error(None, error.message)
                status = error.status_code
            else:
                if not request.htmx:
                    return redirect(
                        reverse("library:detail", kwargs={"slug": slug, "lora_id": lora.id}) + "?tab=record"
                    )
                form, status = None, 200
    else:
        form = TrainingRecordForm.for_lora(lora)
    context = {
        "membership": membership,
        "workspace": membership.workspace,
        "lora": lora,
        "can_edit": True,
        "training_form": form,
        "tab": "record",
    }
    if request.htmx:
        return render(request, "loras/_configuration.html", context, status=status)
    return render(request, "loras/training_edit.html", context, status=status)
