"""`{% output_rating job as rating %}`: the job's RatingSummary for the signed-in member.

On the jobs page every card asks; the first ask reads the summaries of the whole page (`jobs.cards`) in one query
and keeps them on the request, so a page of 20 cards costs one query, not 20."""

from weakref import WeakKeyDictionary

from django import template
from django.http import HttpRequest

from generation.models import GenerationJob
from generation.ratings.selectors import NO_RATINGS, RatingSummary, rating_summaries

register = template.Library()

_per_request: "WeakKeyDictionary[HttpRequest, dict]" = WeakKeyDictionary()


@register.simple_tag(takes_context=True)
def output_rating(context: template.Context, job: GenerationJob) -> RatingSummary:
    request = context["request"]
    known = _per_request.setdefault(request, {})
    if job.id not in known:
        page = context.get("jobs")
        jobs = [card.job for card in page.cards] if page is not None and hasattr(page, "cards") else [job]
        ids = {other.id for other in jobs} | {job.id}
        found = rating_summaries(job_ids=ids, user=request.user)
        known.update({job_id: found.get(job_id, NO_RATINGS) for job_id in ids})
    return known[job.id]
