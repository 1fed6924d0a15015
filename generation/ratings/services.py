"""Writes for ratings: set (create or change) and remove one member's stars for one output.

Any member of the workspace may rate, viewers included — they judge outputs even though they do not generate.
Only a succeeded job has an output to rate; anything else is a 409 naming the job's state."""

from django.db import transaction

from generation.models import GenerationJob, JobStatus, OutputRating
from generation.usage import usage_rating_changed
from lorasite.errors import Conflict, InvalidInput, NotFound
from workspaces.models import Membership

STARS_MIN, STARS_MAX = 1, 5


def _check_rateable(*, actor: Membership, job: GenerationJob) -> None:
    if job.workspace_id != actor.workspace_id:  # callers fetch the job in the actor's workspace; never trust it
        raise NotFound("Job not found.")
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(
            f"Only a succeeded job's output can be rated; this job is {job.get_status_display().lower()}.",
            errors={"job": ["Not succeeded."]},
        )


@transaction.atomic
def rating_set(*, actor: Membership, job: GenerationJob, stars: int) -> OutputRating:
    """The actor's rating of the job's output, created or changed to `stars` (1–5)."""
    _check_rateable(actor=actor, job=job)
    if not isinstance(stars, int) or isinstance(stars, bool) or not STARS_MIN <= stars <= STARS_MAX:
        raise InvalidInput(
            f"A rating is {STARS_MIN} to {STARS_MAX} stars.", errors={"stars": [f"Give {STARS_MIN}–{STARS_MAX}."]}
        )
    # Locked so two requests of one member side by side change one row rather than both inserting.
    rating = OutputRating.objects.select_for_update().filter(job=job, user=actor.user).first()
    old_stars = rating.stars if rating else None
    if rating is None:
        rating = OutputRating(job=job, user=actor.user)
    rating.stars = stars
    rating.full_clean()
    rating.save()
    usage_rating_changed(job=job, old_stars=old_stars, new_stars=stars)
    return rating


@transaction.atomic
def rating_delete(*, actor: Membership, job: GenerationJob) -> None:
    """Remove the actor's rating of the job's output; 404 when there is none."""
    if job.workspace_id != actor.workspace_id:
        raise NotFound("Job not found.")
    rating = OutputRating.objects.select_for_update().filter(job=job, user=actor.user).first()
    if rating is None:
        raise NotFound("You have not rated this output.")
    rating.delete()
    usage_rating_changed(job=job, old_stars=rating.stars, new_stars=None)
