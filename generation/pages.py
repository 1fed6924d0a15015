"""Server-rendered generation pages: the Generate form, the jobs list and a job's page."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from generation import selectors
from workspaces.selectors import membership_for_user


@login_required
def generate(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    return render(request, "generation/generate.html", {"membership": membership, "workspace": membership.workspace})


@login_required
def jobs(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    job_list = selectors.job_list(workspace=membership.workspace)
    return render(request, "generation/jobs.html", {"membership": membership, "workspace": membership.workspace, "jobs": job_list})


@login_required
def job_detail(request: HttpRequest, slug: str, job_id) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    job = selectors.job_get(workspace=membership.workspace, job_id=job_id)
    return render(request, "generation/job_detail.html", {"membership": membership, "workspace": membership.workspace, "job": job})
