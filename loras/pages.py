"""Server-rendered LoRA library pages."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from loras import selectors
from workspaces.selectors import membership_for_user


@login_required
def library(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    loras = selectors.lora_list(workspace=membership.workspace)
    return render(request, "loras/library.html", {"membership": membership, "workspace": membership.workspace, "loras": loras})


@login_required
def lora_detail(request: HttpRequest, slug: str, lora_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    lora = selectors.lora_get(workspace=membership.workspace, lora_id=lora_id)
    return render(request, "loras/detail.html", {"membership": membership, "workspace": membership.workspace, "lora": lora})
