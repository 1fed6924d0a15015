"""Reads for ratings: the summary an output shows (mine, average, count), for one job or a page of jobs in one
query."""

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from django.db.models import Avg, Count, Max, Q

from generation.models import GenerationJob, OutputRating


@dataclass(frozen=True)
class RatingSummary:
    mine: int | None  # the viewing user's stars, None when they have not rated it
    average: float | None  # None without ratings
    count: int

    @property
    def average_label(self) -> str:
        """ "4.2", or "" without ratings (one decimal: a finer average says more than five stars can)."""
        return "" if self.average is None else f"{self.average:.1f}"

    @property
    def scale(self) -> list[tuple[int, bool]]:
        """(stars, filled) for each star of the control: filled up to the member's own rating."""
        return [(stars, self.mine is not None and stars <= self.mine) for stars in range(1, 6)]


NO_RATINGS = RatingSummary(mine=None, average=None, count=0)


def rating_summaries(*, job_ids: Iterable[UUID], user) -> dict[UUID, RatingSummary]:
    """Each job's summary, as seen by `user`, in one aggregate query; jobs without ratings are left out (use
    NO_RATINGS)."""
    rows = (
        OutputRating.objects.filter(job_id__in=list(job_ids))
        .values("job_id")
        .annotate(average=Avg("stars"), count=Count("id"), mine=Max("stars", filter=Q(user_id=user.id)))
    )
    return {
        row["job_id"]: RatingSummary(mine=row["mine"], average=float(row["average"]), count=row["count"])
        for row in rows
    }


def rating_summary(*, job: GenerationJob, user) -> RatingSummary:
    return rating_summaries(job_ids=[job.id], user=user).get(job.id, NO_RATINGS)
