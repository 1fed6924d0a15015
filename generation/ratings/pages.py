"""The dashboard's stars control (templates/generation/_rating.html): one post sets or clears the member's rating
and answers the control again (htmx), or goes back to the page it was on."""

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from generation import selectors as job_selectors
from generation.ratings import services
from generation.ratings.forms import RatingForm
from lorasite.errors import ApplicationError, InvalidInput
from workspaces.selectors import membership_for_user


@login_required
@require_POST
def job_rating(request: HttpRequest, slug: str, job_id: UUID) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    job = job_selectors.job_get(workspace=membership.workspace, job_id=job_id)
    form = RatingForm(request.POST)
    error, status = "", 200
    try:
        if not form.is_valid():
            raise InvalidInput("A rating is 1 to 5 stars.")
        stars = form.cleaned_data["stars"]
        if stars is None:
            services.rating_delete(actor=membership, job=job)
        else:
            services.rating_set(actor=membership, job=job, stars=stars)
    except ApplicationError as exc:
        error, status = exc.message, exc.status_code
    if request.htmx:
        context = {"workspace": membership.workspace, "job": job, "rating_error": error}
        return render(request, "generation/_rating.html", context, status=status)
    if error:
        messages.error(request, error)
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect("studio:job", slug=slug, job_id=job.id)
