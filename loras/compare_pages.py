"""The compare page, /w/<slug>/loras/compare/?ids=1&ids=2: LoRAs side by side (loras/comparison.py)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from generation.experiments import stats
from loras import comparison
from lorasite.errors import ApplicationError
from workspaces.selectors import membership_for_user


@login_required
@require_GET
def lora_compare(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    context = {"membership": membership, "workspace": membership.workspace, "rows": [], "error": ""}
    status = 200
    try:
        ids = [int(value) for value in request.GET.getlist("ids") if value.strip()]
        loras = comparison.lora_compare_get(workspace=membership.workspace, lora_ids=ids)
        context["rows"] = comparison.lora_comparison(loras=loras)
    except ValueError:
        context["error"], status = "The address names LoRAs by number: ?ids=12&ids=15.", 400
    except ApplicationError as error:
        if error.status_code == 404:
            raise
        context["error"], status = error.message, error.status_code
    context.update(test=comparison.TEST_NAME, alpha=stats.ALPHA, min_ratings=comparison.MIN_RATINGS)
    return render(request, "loras/compare.html", context, status=status)
