"""`{% output_rating job as rating %}`: the job's RatingSummary for the signed-in member.

On the jobs page every card asks, on a sweep's grid every cell; the first ask reads the summaries of the whole page
(`jobs.cards`, `grid.cells`) in one query and keeps them on the request, so a page of 20 cards or a grid of 36
cells costs one query, not one each."""

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
        ids = _jobs_shown(context) | {job.id}
        found = rating_summaries(job_ids=ids, user=request.user)
        known.update({job_id: found.get(job_id, NO_RATINGS) for job_id in ids})
    return known[job.id]


def _jobs_shown(context: template.Context) -> set:
    """The ids of the jobs the page shows beside this one: a jobs page's cards or a sweep grid's cells."""
    page, grid = context.get("jobs"), context.get("grid")
    if page is not None and hasattr(page, "cards"):
        return {card.job.id for card in page.cards}
    if grid is not None and hasattr(grid, "cells"):
        return {cell.job.id for cell in grid.cells if cell.job}
    return set()
