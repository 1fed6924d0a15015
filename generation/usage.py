"""Maintained usage counters (generation.models.UsageCounter): generations, succeeded, failed, the 1–5 ratings
histogram and the last use of the outputs made with each LoRA, with each pair (either half), and with no LoRA on
each model of a workspace — what the LoRA page shows against the base model (loras/metrics.py) in a couple of
indexed row reads, whatever the history.

A job counts once for every distinct LoRA it used (a LoRA in both experts once) and every pair it used a half of
(both halves once), or, with no LoRA at all, for its model's no-LoRA row; preview jobs (auto previews) count
nowhere, as they do not count as uses. The definitions are the aggregates in `_aggregate`:
`usage_counters_rebuild` recomputes a workspace's rows from them (the migration's backfill, `manage.py
usage_rebuild`, and beat once a day for writes that bypass the services, such as a user deleted in the admin
taking their ratings along); the `usage_*` event functions apply the same definitions one job create, finish,
delete, rating change or new pair at a time, in the caller's transaction. tests/test_usage_counters.py holds the
two equal after every kind of event."""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace

from django.db import transaction
from django.db.models import Count, DateTimeField, Exists, F, Max, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Greatest

from generation.models import GenerationJob, JobLoRA, JobPurpose, JobStatus, OutputRating, UsageCounter
from loras.models import LoRAPair

STARS = (1, 2, 3, 4, 5)
STAR_FIELDS = tuple(f"stars_{stars}" for stars in STARS)
FIGURE_FIELDS = ("generations", "succeeded", "failed", *STAR_FIELDS)  # what a rebuild recomputes, with the times
# The counter a finished job adds to; a cancelled one counts as a generation only.
STATUS_FIELDS = {JobStatus.SUCCEEDED: "succeeded", JobStatus.FAILED: "failed"}


@dataclass(frozen=True)
class _Subjects:
    lora_ids: tuple[int, ...]  # the LoRAs still in the library that the job used
    pair_ids: tuple[int, ...]  # the pairs those LoRAs are halves of
    base: bool  # the job used no LoRA: it counts for its model's no-LoRA row

    @property
    def any(self) -> bool:
        return self.base or bool(self.lora_ids)


def _subjects(job: GenerationJob, lora_ids: Iterable[int | None] | None = None) -> _Subjects | None:
    """What the job counts for, or None (a preview job); its JobLoRA rows are read unless `lora_ids` gives them."""
    if job.purpose == JobPurpose.PREVIEW:
        return None
    if lora_ids is None:
        lora_ids = JobLoRA.objects.filter(job_id=job.id).values_list("lora_id", flat=True)
    used = list(lora_ids)
    library = tuple(sorted({lora_id for lora_id in used if lora_id is not None}))
    pairs = LoRAPair.objects.filter(Q(high_id__in=library) | Q(low_id__in=library)) if library else None
    return _Subjects(
        lora_ids=library,
        pair_ids=tuple(pairs.order_by("id").values_list("id", flat=True)) if pairs is not None else (),
        base=not used,
    )


def _rows(job: GenerationJob, subjects: _Subjects) -> QuerySet:
    """The subjects' counter rows, created (zero) first where missing; ON CONFLICT DO NOTHING makes two jobs that
    create one row side by side harmless."""
    workspace_id = job.workspace_id
    if subjects.base:
        missing = [UsageCounter(workspace_id=workspace_id, model_key=job.model_key)]
        rows = UsageCounter.objects.filter(workspace_id=workspace_id, lora=None, pair=None, model_key=job.model_key)
    else:
        missing = [UsageCounter(workspace_id=workspace_id, lora_id=lora_id) for lora_id in subjects.lora_ids]
        missing += [UsageCounter(workspace_id=workspace_id, pair_id=pair_id) for pair_id in subjects.pair_ids]
        rows = UsageCounter.objects.filter(Q(lora_id__in=subjects.lora_ids) | Q(pair_id__in=subjects.pair_ids))
    UsageCounter.objects.bulk_create(missing, ignore_conflicts=True)
    return rows


def _add(job: GenerationJob, subjects: _Subjects | None, changes: Counter, **also) -> QuerySet | None:
    changes = {name: delta for name, delta in changes.items() if delta}
    if subjects is None or not subjects.any or not (changes or also):
        return None
    rows = _rows(job, subjects)
    rows.update(**{name: F(name) + delta for name, delta in changes.items()}, **also)
    return rows


def usage_job_created(*, job: GenerationJob, lora_ids: Iterable[int]) -> None:
    """A job was created with these LoRAs (none: it counts for its model with no LoRA)."""
    created = Value(job.created_at, output_field=DateTimeField())
    _add(
        job,
        _subjects(job, lora_ids),
        Counter(generations=1),
        last_used=Greatest(Coalesce("last_used", created), created),
    )


def usage_job_finished(*, job: GenerationJob) -> None:
    """The job has just reached its final status; a succeeded one with a thumbnail is its LoRAs' latest output."""
    field = STATUS_FIELDS.get(job.status)
    if not field:
        return
    rows = _add(job, _subjects(job), Counter({field: 1}))
    if rows is not None and job.status == JobStatus.SUCCEEDED and job.thumb_key:
        rows.filter(lora__isnull=False).update(latest_output=job)


def usage_rating_changed(*, job: GenerationJob, old_stars: int | None, new_stars: int | None) -> None:
    """A rating of the job's output was given (old None), changed, or removed (new None)."""
    changes = Counter()
    if old_stars:
        changes[f"stars_{old_stars}"] -= 1
    if new_stars:
        changes[f"stars_{new_stars}"] += 1
    _add(job, _subjects(job), changes)


def usage_job_deleted(*, job: GenerationJob) -> None:
    """The job (and with it its ratings) is about to be deleted: take its figures out."""
    changes = Counter(generations=-1)
    if field := STATUS_FIELDS.get(job.status):
        changes[field] -= 1
    for stars in OutputRating.objects.filter(job_id=job.id).values_list("stars", flat=True):
        changes[f"stars_{stars}"] -= 1
    rows = _add(job, _subjects(job), changes)
    if rows is None:
        return
    # Where the job going was the newest one counted, or a LoRA's latest output, the rest's newest take over.
    for counter in rows.filter(Q(last_used=job.created_at) | Q(latest_output=job)).select_related("pair"):
        latest_output = None
        if counter.lora_id or counter.pair_id:
            halves = [counter.lora_id] if counter.lora_id else [counter.pair.high_id, counter.pair.low_id]
            rest = JobLoRA.objects.filter(lora_id__in=halves).exclude(job__purpose=JobPurpose.PREVIEW)
            rest = rest.exclude(job_id=job.id)
            newest = rest.aggregate(newest=Max("job__created_at"))["newest"]
            if counter.lora_id:
                latest_output = _latest_output(rest).first()
        else:
            rest = no_lora_jobs(counter.workspace_id).filter(model_key=counter.model_key)
            newest = rest.exclude(id=job.id).aggregate(newest=Max("created_at"))["newest"]
        UsageCounter.objects.filter(id=counter.id).update(last_used=newest, latest_output=latest_output)


def usage_pair_created(*, pair: LoRAPair) -> None:
    """A pair was made of two LoRAs that may have a history already: count it once, from that history."""
    figures = _pair_figures(pair.workspace_id, [(pair.id, pair.high_id, pair.low_id)], models=_MODELS)
    UsageCounter.objects.create(workspace_id=pair.workspace_id, pair=pair, **figures.get(("pair", pair.id), {}))


# --- the definitions: aggregates over the history, for the rebuild -----------------------------------------

_MODELS = SimpleNamespace(
    GenerationJob=GenerationJob,
    JobLoRA=JobLoRA,
    OutputRating=OutputRating,
    UsageCounter=UsageCounter,
    LoRAPair=LoRAPair,
)


def _latest_output(uses: QuerySet) -> QuerySet:
    """The job id of the newest succeeded job with a thumbnail among these JobLoRA rows (a one-row queryset)."""
    with_thumbnail = uses.filter(job__status=JobStatus.SUCCEEDED).exclude(job__thumb_key="")
    return with_thumbnail.order_by("-job__finished_at").values_list("job_id", flat=True)[:1]


def no_lora_jobs(workspace_id: int, *, models: SimpleNamespace = _MODELS) -> QuerySet:
    """The workspace's jobs that count for their model's no-LoRA row."""
    without_loras = ~Exists(models.JobLoRA.objects.filter(job_id=OuterRef("pk")))
    return models.GenerationJob.objects.filter(without_loras, workspace_id=workspace_id).exclude(
        purpose=JobPurpose.PREVIEW
    )


def histogram_counts(distinct_on: str) -> dict:
    # Distinct ids: through JobLoRA a LoRA used twice in one job (both experts) would count its ratings twice.
    return {f"stars_{stars}": Count(distinct_on, distinct=True, filter=Q(stars=stars)) for stars in STARS}


def _job_figures(prefix: str = "") -> dict:
    """Generations, outcomes and last use of the jobs reached through `prefix` (e.g. "job__"), each job once."""
    job_id = f"{prefix}id" if prefix else "id"
    return {
        "generations": Count(job_id, distinct=True),
        "succeeded": Count(job_id, distinct=True, filter=Q(**{f"{prefix}status": JobStatus.SUCCEEDED})),
        "failed": Count(job_id, distinct=True, filter=Q(**{f"{prefix}status": JobStatus.FAILED})),
        "last_used": Max(f"{prefix}created_at"),
    }


def _pair_figures(workspace_id: int, pairs: list[tuple[int, int, int]], *, models: SimpleNamespace) -> dict:
    """Each (pair id, high id, low id)'s figures: the jobs that used either half, each once (two queries a pair)."""
    figures = {}
    for pair_id, high_id, low_id in pairs:
        uses = models.JobLoRA.objects.filter(lora_id__in=[high_id, low_id], job__workspace_id=workspace_id)
        jobs = models.GenerationJob.objects.filter(id__in=uses.values("job_id")).exclude(purpose=JobPurpose.PREVIEW)
        row = jobs.aggregate(**_job_figures())
        if row["generations"]:
            rated = models.OutputRating.objects.filter(job_id__in=jobs.values("id"))
            figures[("pair", pair_id)] = row | rated.aggregate(**histogram_counts("id"))
    return figures


def _aggregate(workspace_id: int, *, models: SimpleNamespace) -> dict[tuple[str, int | str], dict]:
    """The workspace's figures per ("lora", id), ("pair", id) and ("base", model key), from the history."""
    figures: dict[tuple[str, int | str], dict] = {}
    used = models.JobLoRA.objects.filter(job__workspace_id=workspace_id, lora__isnull=False).exclude(
        job__purpose=JobPurpose.PREVIEW
    )
    for row in used.values("lora_id").annotate(**_job_figures("job__")):
        figures[("lora", row.pop("lora_id"))] = row
    rated = models.OutputRating.objects.filter(job__workspace_id=workspace_id, job__job_loras__lora__isnull=False)
    for row in (
        rated.exclude(job__purpose=JobPurpose.PREVIEW)
        .values(subject=F("job__job_loras__lora_id"))
        .annotate(**histogram_counts("id"))
    ):
        figures.setdefault(("lora", row.pop("subject")), {}).update(row)
    base = no_lora_jobs(workspace_id, models=models)
    for row in base.values("model_key").annotate(**_job_figures()):
        figures[("base", row.pop("model_key"))] = row
    base_rated = models.OutputRating.objects.filter(job_id__in=base.values("id"))
    for row in base_rated.values(subject=F("job__model_key")).annotate(**histogram_counts("id")):
        figures.setdefault(("base", row.pop("subject")), {}).update(row)
    pairs = models.LoRAPair.objects.filter(workspace_id=workspace_id).values_list("id", "high_id", "low_id")
    return figures | _pair_figures(workspace_id, list(pairs), models=models)


def _subject_key(row) -> tuple[str, int | str]:
    if row.lora_id:
        return ("lora", row.lora_id)
    return ("pair", row.pair_id) if row.pair_id else ("base", row.model_key)


def rebuild_workspace_counters(workspace_id: int, *, models: SimpleNamespace = _MODELS) -> int:
    """Recompute the workspace's counter rows from the history; the number of rows written. `models` lets the
    backfill migration pass its historical models."""
    figures = _aggregate(workspace_id, models=models)
    counters = models.UsageCounter.objects
    fields = {"lora": "lora_id", "pair": "pair_id", "base": "model_key"}
    counters.bulk_create(
        [models.UsageCounter(workspace_id=workspace_id, **{fields[kind]: key}) for kind, key in figures],
        ignore_conflicts=True,
    )
    # Locked before the history is read (READ COMMITTED reads per statement): a job whose counter update is
    # waiting on this lock is not yet visible to the aggregates, and adds itself on top once this commits.
    rows = list(counters.select_for_update().filter(workspace_id=workspace_id))
    zero = dict.fromkeys(FIGURE_FIELDS, 0) | {"last_used": None}
    for row in rows:
        for name, value in (zero | figures.get(_subject_key(row), {})).items():
            setattr(row, name, value)
    counters.bulk_update(rows, [*FIGURE_FIELDS, "last_used"], batch_size=500)
    uses = models.JobLoRA.objects.filter(lora_id=OuterRef("lora_id")).exclude(job__purpose=JobPurpose.PREVIEW)
    counters.filter(workspace_id=workspace_id, lora__isnull=False).update(latest_output=Subquery(_latest_output(uses)))
    return len(rows)


@transaction.atomic
def usage_counters_rebuild(*, workspace_id: int) -> int:
    """Recompute one workspace's usage counters from its jobs and ratings (repair, backfill)."""
    return rebuild_workspace_counters(workspace_id)
