"""Writes for generation jobs: creation (every problem found before any GPU time), cancel, retry,
and the state transitions the GPU worker reports through."""

import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from generation import scaleout
from generation.inputs import job_image_params
from generation.model_registry import BaseModel, family_fits, lora_fit_problem, model_get
from generation.models import GenerationJob, JobLoRA, JobPurpose, JobStatus
from generation.usage import usage_job_created, usage_job_deleted, usage_job_finished
from loras.lora_inspect import family_label
from loras.models import LoRA, Status
from lorasite.errors import Conflict, InvalidInput, ServiceUnavailable
from lorasite.object_store import get_object_store
from lorasite.queueing import REDISPATCH_GRACE_SECONDS, send_after_commit, send_now
from workspaces.models import Membership, Role
from workspaces.quota import quota_check_generation
from workspaces.services import require_role, storage_purge_schedule

logger = logging.getLogger(__name__)

SEED_MAX = 2**32 - 1

QUEUE_DOWN_MESSAGE = "The job queue is unavailable; your job is saved and will start when it is back."
# Beat re-queues a running job whose attempt started longer than the hard limit plus this ago: the hard
# limit has killed any worker still on it, so its worker died (a lost node never acknowledges the message).
STALL_MARGIN_SECONDS = 60
# Redis reads a queue's priority lists from 0 up (0, the default, first): preview jobs wait behind every user job.
# The embedded filesystem broker has no priorities; there previews queue in order.
PREVIEW_PRIORITY = 9


@dataclass(frozen=True)
class LoRARequest:
    """One LoRA of a job. `weight` alone is both experts' weight; with expert "both", `weight_low` gives the
    low-noise expert its own weight (and `weight` is then the high-noise one's)."""

    lora_id: int
    weight: float | None = None
    expert: str | None = None
    weight_low: float | None = None


@dataclass(frozen=True)
class ResolvedLoRA:
    lora: LoRA
    weight: float
    expert: str
    weight_low: float | None = None


class JobProblems:
    """Collects one message per problem, keyed by the field it is about."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.errors:
            messages = [m for ms in self.errors.values() for m in ms]
            summary = (
                messages[0]
                if len(messages) == 1
                else f"{len(messages)} problems: " + " ".join(m if m.endswith(".") else m + "." for m in messages)
            )
            raise InvalidInput(summary, errors=self.errors)


def resolve_params(model: BaseModel, params: dict, problems: JobProblems) -> dict:
    """`params` completed with the model's defaults; each value outside its capabilities added to `problems`.
    Public for the other writes that take a job's inputs (recipes) and must check them the same way."""
    caps = model.capabilities
    width, height = params.get("width"), params.get("height")
    if width is None and height is None:
        width, height = caps.resolutions[0]
    elif (width, height) not in caps.resolutions:
        allowed = ", ".join(f"{w}×{h}" for w, h in caps.resolutions)
        problems.add("params.width", f"{width}×{height} is not a resolution {model.display_name} supports ({allowed})")
    resolved = {"width": width, "height": height}

    steps = params.get("steps", caps.default_steps)
    if not caps.steps[0] <= steps <= caps.steps[1]:
        problems.add(
            "params.steps", f"steps must be between {caps.steps[0]} and {caps.steps[1]} for {model.display_name}"
        )
    resolved["steps"] = steps

    guidance = params.get("guidance", caps.default_guidance)
    low, high = caps.guidance_range
    if not low <= guidance <= high:
        problems.add("params.guidance", f"guidance must be between {low:g} and {high:g}")
    resolved["guidance"] = guidance
    if model.two_experts:
        guidance_2 = params.get("guidance_2", caps.default_guidance_2)
        if not low <= guidance_2 <= high:
            problems.add("params.guidance_2", f"guidance_2 must be between {low:g} and {high:g}")
        resolved["guidance_2"] = guidance_2
    elif params.get("guidance_2") is not None:
        problems.add("params.guidance_2", f"guidance_2 is for two-expert models; {model.display_name} has one")

    if model.kind == "video":
        frames = params.get("num_frames", caps.frame_counts[0])
        if frames not in caps.frame_counts:
            problems.add("params.num_frames", f"num_frames must be one of {', '.join(map(str, caps.frame_counts))}")
        fps = params.get("fps", caps.default_fps)
        if fps not in caps.fps:
            problems.add("params.fps", f"fps must be one of {', '.join(map(str, caps.fps))}")
        resolved.update(num_frames=frames, fps=fps)
    else:
        for field in ("num_frames", "fps"):
            if params.get(field) is not None:
                problems.add(f"params.{field}", f"{field} is for video models; {model.display_name} makes images")

    seed = params.get("seed")
    if seed is None:
        seed = random.randint(0, SEED_MAX)
    elif not 0 <= seed <= SEED_MAX:
        problems.add("params.seed", f"seed must be between 0 and {SEED_MAX}")
    resolved["seed"] = seed
    return resolved


def _weight_problem(name: str, weight: float | None) -> str:
    if weight is None or 0.0 <= weight <= 2.0:
        return ""
    return f"{name} must be between 0.0 and 2.0, not {weight:g}"


def _compatible_names(workspace_id: int, model: BaseModel) -> list[str]:
    return list(
        LoRA.objects.alive()
        .filter(workspace_id=workspace_id, base_model__in=model.families, status=Status.READY, is_active=True)
        .values_list("name", flat=True)[:5]
    )


def _lora_problems(lora: LoRA, model: BaseModel, compatible: Callable[[], list[str]]) -> list[str]:
    """Everything that keeps `lora` out of a job on `model`, all at once (a user fixes them in one go)."""
    label = f"LoRA '{lora.name}'"
    if lora.deleted_at:
        return [f"{label} has been deleted"]  # nothing else about a deleted LoRA is worth fixing
    problems = []
    if lora.status != Status.READY:
        reason = f": {lora.error}" if lora.status == Status.FAILED and lora.error else ""
        problems.append(f"{label} is not ready (it is {lora.status}{reason})")
    if not lora.is_active:
        problems.append(f"{label} is inactive; activate it to use it")
    if not family_fits(lora.base_model, model):
        names = compatible()
        none_fits = " No LoRA in this workspace fits it yet."
        suggestion = f" Compatible LoRAs here: {', '.join(names)}." if names else none_fits
        problems.append(
            f"'{lora.name}' is a {family_label(lora.base_model)} LoRA; {model.display_name} needs "
            f"a {model.family} LoRA.{suggestion}"
        )
    elif misfit := lora_fit_problem(lora.module_shapes, model):
        problems.append(f"'{lora.name}' does not fit {model.display_name}: {misfit}")
    return problems


def resolve_loras(
    *, workspace_id: int, model: BaseModel, requests: list[LoRARequest], problems: JobProblems
) -> list[ResolvedLoRA]:
    """Each entry checked for every problem it has (not only the first one found), keyed by its field."""
    limit = settings.LORASITE_MAX_LORAS_PER_JOB
    if len(requests) > limit:
        problems.add("loras", f"At most {limit} LoRAs per job; {len(requests)} were given")
        return []
    found = {
        lora.id: lora for lora in LoRA.objects.filter(workspace_id=workspace_id, id__in=[r.lora_id for r in requests])
    }
    compatible = functools.cache(lambda: _compatible_names(workspace_id, model))
    resolved, seen = [], set()
    for index, request in enumerate(requests):
        field = f"loras.{index}"
        entry = JobProblems()
        lora = found.get(request.lora_id)
        if lora is None:
            entry.add(f"{field}.lora_id", f"LoRA {request.lora_id} is not in this workspace")
        elif lora.id in seen:
            entry.add(f"{field}.lora_id", f"LoRA '{lora.name}' is listed twice")
        else:
            seen.add(lora.id)
            for message in _lora_problems(lora, model, compatible):
                entry.add(f"{field}.lora_id", message)
        for name in ("weight", "weight_low"):
            if message := _weight_problem(name, getattr(request, name)):
                entry.add(f"{field}.{name}", message)
        if model.two_experts:
            expert = request.expert or (lora.expert if lora else None)
            if request.weight_low is not None and expert not in (None, "both"):
                entry.add(
                    f"{field}.weight_low",
                    f"weight_low is the low-noise weight of a LoRA on both experts; this one is on {expert} "
                    "(set expert to both, or leave weight_low out)",
                )
        else:
            expert = "high"
            if request.expert not in (None, "high"):
                entry.add(f"{field}.expert", f"{model.display_name} has a single expert; leave expert out")
            if request.weight_low is not None:
                entry.add(f"{field}.weight_low", f"weight_low is for two-expert models; {model.display_name} has one")
        if entry.errors:
            for key, messages in entry.errors.items():
                for message in messages:
                    problems.add(key, message)
            continue
        weight = lora.preferred_weight if request.weight is None else request.weight
        resolved.append(ResolvedLoRA(lora=lora, weight=weight, expert=expert, weight_low=request.weight_low))
    return resolved


def generation_create(
    *,
    actor: Membership,
    model: str,
    prompt: str,
    negative_prompt: str = "",
    params: dict | None = None,
    loras: list[LoRARequest] | None = None,
    retry_of: GenerationJob | None = None,
    purpose: str = JobPurpose.USER,
) -> GenerationJob:
    """Validate everything a GPU would otherwise discover too late, then queue the job. With the job queue
    down the job is saved all the same (beat sends it later) and ServiceUnavailable names its id. A `preview`
    job (loras.previews.auto_preview_queue) is queued behind users' jobs."""
    with transaction.atomic():
        job = _create_job(
            actor=actor,
            model=model,
            prompt=prompt,
            negative_prompt=negative_prompt,
            params=params,
            loras=loras,
            retry_of=retry_of,
            purpose=purpose,
        )
        delivery = send_after_commit(lambda: _send_job(job), description=f"job {job.id}")
    if delivery.failed:
        raise ServiceUnavailable(QUEUE_DOWN_MESSAGE, service="job queue", job_id=str(job.id))
    return job


def _create_job(
    *,
    actor: Membership,
    model: str,
    prompt: str,
    negative_prompt: str,
    params: dict | None,
    loras: list[LoRARequest] | None,
    retry_of: GenerationJob | None,
    purpose: str,
) -> GenerationJob:
    require_role(membership=actor, minimum=Role.MEMBER, action="run generations")
    quota_check_generation(workspace=actor.workspace)
    base = model_get(model)
    problems = JobProblems()
    if not base.weights_present:
        hint = " Run `python manage.py build_demo_models`." if base.demo else " Set its path in LORASITE_MODELS_FILE."
        # Say what to do, never where: server paths are for operators (GET /api/v1/models/ shows them to staff).
        problems.add("model", f"The weights of {base.display_name} are not installed on this server.{hint}")
    resolved_params = resolve_params(base, params or {}, problems)
    resolved_params |= job_image_params(workspace_id=actor.workspace_id, model=base, params=params or {})
    resolved_loras = resolve_loras(workspace_id=actor.workspace_id, model=base, requests=loras or [], problems=problems)
    problems.raise_if_any()

    job = GenerationJob(
        workspace_id=actor.workspace_id,
        created_by_id=actor.user_id,
        retry_of=retry_of,
        model_key=base.key,
        model_name=base.display_name,
        kind=base.kind,
        prompt=prompt,
        negative_prompt=negative_prompt,
        params=resolved_params,
        input_id=resolved_params.get("image"),
        purpose=purpose,
        output_bytes=0,
    )
    job.full_clean()
    job.save()
    for position, entry in enumerate(resolved_loras):
        job_lora = JobLoRA(
            job=job,
            lora=entry.lora,
            position=position,
            lora_ref=entry.lora.id,
            name=entry.lora.name,
            version=entry.lora.version,
            sha256=entry.lora.sha256,
            file_key=entry.lora.file.name,
            file_size=entry.lora.file_size,
            weight=entry.weight,
            weight_low=entry.weight_low,
            expert=entry.expert,
        )
        job_lora.full_clean()
        job_lora.save()
    usage_job_created(job=job, lora_ids=[entry.lora.id for entry in resolved_loras])
    return job


def _send_job(job: GenerationJob) -> None:
    """Publish the job's message and record that the broker took it (raises the broker's error)."""
    from generation.tasks import generation_run

    # One queue per model, or a worker's own queue (generation/scaleout.py): only a worker that serves this model
    # receives the job. Preview jobs go last.
    priority = PREVIEW_PRIORITY if job.purpose == JobPurpose.PREVIEW else None
    generation_run.apply_async(args=[str(job.id)], queue=scaleout.job_queue(job), priority=priority)
    GenerationJob.objects.filter(id=job.id).update(enqueued_at=timezone.now())


def jobs_redispatch(*, now=None) -> int:
    """Beat: re-send queued jobs whose message may not have reached the broker, or was lost there
    (lorasite/queueing.py); the number the broker took."""
    now = now or timezone.now()
    queued = (
        GenerationJob.objects.filter(status=JobStatus.QUEUED).order_by("created_at").only("id", "model_key", "purpose")
    )
    unsent = list(
        queued.filter(enqueued_at__isnull=True, updated_at__lt=now - timedelta(seconds=REDISPATCH_GRACE_SECONDS))
    )
    waiting = list(queued.filter(enqueued_at__lt=now - timedelta(seconds=settings.LORASITE_RESEND_AFTER_SECONDS)))
    backlogs = {key: scaleout.model_backlog(key) for key in {job.model_key for job in waiting}}
    lost = [job for job in waiting if backlogs[job.model_key] == 0]
    sent = 0
    for job in unsent + lost:
        if not send_now(lambda job=job: _send_job(job), description=f"job {job.id}"):
            break  # the broker is still down: the next beat run tries again
        sent += 1
    return sent


def generation_retry(*, actor: Membership, job: GenerationJob) -> GenerationJob:
    """A new job with the same inputs (checked again: a LoRA may have been deleted since)."""
    requests = [
        LoRARequest(lora_id=jl.lora_ref, weight=jl.weight, expert=jl.expert, weight_low=jl.weight_low)
        for jl in job.job_loras.all()
    ]
    params = dict(job.params)
    return generation_create(
        actor=actor,
        model=job.model_key,
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        params=params,
        loras=requests,
        retry_of=job,
    )


@transaction.atomic
def generation_cancel(*, actor: Membership, job: GenerationJob) -> GenerationJob:
    """A queued job is cancelled at once; a running one between two steps, by its worker."""
    if job.created_by_id != actor.user_id:
        require_role(membership=actor, minimum=Role.ADMIN, action="cancel someone else's job")
    job = GenerationJob.objects.select_for_update().get(id=job.id)
    if job.is_finished:
        raise Conflict(f"The job has already {job.status}.")
    if job.status == JobStatus.QUEUED:
        job.status, job.finished_at = JobStatus.CANCELLED, timezone.now()
    job.cancel_requested = True
    job.save(update_fields=["status", "finished_at", "cancel_requested", "updated_at"])
    return job


def job_output_prefix(job: GenerationJob) -> str:
    """Where a job's output and poster are stored."""
    return f"workspaces/{job.workspace_id}/outputs/{job.id}/"


@transaction.atomic
def job_delete(*, actor: Membership, job: GenerationJob) -> None:
    """Members delete their own finished jobs, admins and owners any. The row goes at once (its LoRAs' use
    counts stay); the output and poster after LORASITE_PURGE_AFTER_DAYS, like a deleted LoRA's file."""
    if job.created_by_id != actor.user_id:
        require_role(membership=actor, minimum=Role.ADMIN, action="delete someone else's job")
    require_role(membership=actor, minimum=Role.MEMBER, action="delete jobs")
    job = GenerationJob.objects.select_for_update().get(id=job.id)
    if not job.is_finished:
        raise Conflict(f"The job is {job.status}; cancel it, then delete it once it has stopped.")
    storage_purge_schedule(prefix=job_output_prefix(job), reason=f"job {job.id} deleted")
    usage_job_deleted(job=job)
    job.delete()


# --- transitions reported by the GPU worker --------------------------------------------------------


def _stall_cutoff(now):
    """An attempt started before this cannot still be running: the hard time limit has stopped it."""
    return now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + STALL_MARGIN_SECONDS)


def _gave_up_message(attempts: int) -> str:
    return f"The worker running this job stopped {attempts} times; giving up."


@transaction.atomic
def job_claim(*, job_id: str, worker: str) -> GenerationJob | None:
    """Start (or, after a lost worker, restart) a job; None when it must not run.

    Idempotent, so a message sent twice is harmless: a `running` job is only restarted when its attempt
    cannot still be alive (started before the stall cutoff); a second message for a live attempt is dropped.
    """
    job = GenerationJob.objects.select_for_update().filter(id=job_id).first()
    if job is None or job.is_finished:
        return None
    now = timezone.now()
    if job.status == JobStatus.RUNNING and job.attempt_started_at and job.attempt_started_at >= _stall_cutoff(now):
        logger.info(
            "Job %s: attempt %s is still running on %s; dropping a second message", job.id, job.attempts, job.worker
        )
        return None
    if job.attempts >= settings.LORASITE_TASK_MAX_ATTEMPTS:
        _finish(job, JobStatus.FAILED, error=_gave_up_message(job.attempts))
        return None
    job.attempts += 1
    job.status, job.worker = JobStatus.RUNNING, worker[:200]
    job.started_at = job.started_at or now
    job.attempt_started_at = now
    job.timings = {**job.timings, "queue_wait": round((now - job.created_at).total_seconds(), 3)}
    job.save(
        update_fields=["attempts", "status", "worker", "started_at", "attempt_started_at", "timings", "updated_at"]
    )
    return job


def job_progress(*, job_id: str, step: int, total: int) -> None:
    progress = min(99, int(step * 100 / max(total, 1)))  # 100 only once the output is stored
    GenerationJob.objects.filter(id=job_id, status=JobStatus.RUNNING).update(
        current_step=step, total_steps=total, progress=progress, updated_at=timezone.now()
    )


def job_cancel_requested(*, job_id: str) -> bool:
    return GenerationJob.objects.filter(id=job_id, cancel_requested=True).exists()


def _finish(job: GenerationJob, status: str, *, error: str = "", timings: dict | None = None, **fields) -> None:
    job.status, job.error, job.finished_at = status, error, timezone.now()
    job.timings = {**job.timings, **(timings or {})}
    for name, value in fields.items():
        setattr(job, name, value)
    job.save()
    usage_job_finished(job=job)


def _running_or_none(job_id: str, *, outcome: str) -> GenerationJob | None:
    """The job locked, when it is `running` (the only state a worker's result may move it from)."""
    job = GenerationJob.objects.select_for_update().get(id=job_id)
    if job.status != JobStatus.RUNNING:
        logger.warning("Job %s is %s; ignoring a worker's report that it %s", job.id, job.status, outcome)
        return None
    return job


def _delete_objects(*keys: str) -> None:
    store = get_object_store()
    for key in filter(None, keys):
        store.delete(key)


@transaction.atomic
def job_succeed(
    *,
    job_id: str,
    output_key: str,
    poster_key: str,
    timings: dict,
    thumb_key: str = "",
    output_bytes: int | None = None,
) -> None:
    """The worker stored the job's output; `output_bytes` (output and poster) counts toward the quota, None: not
    measured, the bucket is asked (workspaces/quota.py)."""
    from loras.previews import lora_preview_from_preview_job  # loras.previews imports this module

    job = _running_or_none(job_id, outcome="succeeded")
    if job is None:
        # The job ended otherwise meanwhile (failed by beat, say): its late output belongs to no row.
        transaction.on_commit(lambda: _delete_objects(output_key, poster_key, thumb_key))
        return
    _finish(
        job,
        JobStatus.SUCCEEDED,
        timings=timings,
        output_key=output_key,
        poster_key=poster_key,
        thumb_key=thumb_key,
        output_bytes=output_bytes,
        progress=100,
    )
    if job.purpose == JobPurpose.PREVIEW:  # not a use: it neither counts nor moves the LoRA up the picker
        lora_preview_from_preview_job(job=job)
    else:
        LoRA.objects.filter(job_uses__job=job).update(use_count=F("use_count") + 1, last_used_at=job.finished_at)


@transaction.atomic
def job_fail(*, job_id: str, error: str, timings: dict, cancelled: bool = False) -> None:
    job = _running_or_none(job_id, outcome="cancelled" if cancelled else "failed")
    if job is None:
        return
    if cancelled:
        _finish(job, JobStatus.CANCELLED, error="Cancelled.", timings=timings)
    else:
        _finish(job, JobStatus.FAILED, error=error, timings=timings)


@transaction.atomic
def jobs_recover_stalled(*, now=None) -> dict[str, int]:
    """Beat: a job still `running` past the stall cutoff lost its worker. Re-queue it for its next attempt (the
    one redelivery the README promises, whatever the broker's visibility timeout), or fail it once it has had
    LORASITE_TASK_MAX_ATTEMPTS; a cancelled one just ends. A late message for it is dropped by `job_claim`."""
    now = now or timezone.now()
    counts = {"requeued": 0, "failed": 0, "cancelled": 0}
    stalled = GenerationJob.objects.select_for_update(skip_locked=True).filter(
        status=JobStatus.RUNNING, attempt_started_at__lt=_stall_cutoff(now)
    )
    for job in stalled:
        if job.cancel_requested:
            _finish(job, JobStatus.CANCELLED, error="Cancelled.")
            counts["cancelled"] += 1
        elif job.attempts >= settings.LORASITE_TASK_MAX_ATTEMPTS:
            _finish(job, JobStatus.FAILED, error=_gave_up_message(job.attempts))
            counts["failed"] += 1
        else:
            logger.warning(
                "Job %s: its worker %s stopped during attempt %s; queueing it again", job.id, job.worker, job.attempts
            )
            job.status, job.enqueued_at, job.progress, job.current_step = JobStatus.QUEUED, None, 0, 0
            job.save(update_fields=["status", "enqueued_at", "progress", "current_step", "updated_at"])
            send_after_commit(lambda job=job: _send_job(job), description=f"job {job.id}")
            counts["requeued"] += 1
    return counts
