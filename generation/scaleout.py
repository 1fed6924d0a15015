"""Scale-out across GPU workers: the Celery and registry side of routing (generation/routing.py is the pure part).

`job_queue(job)` is where `services._send_job` publishes a job: it reads the live workers from the registry and
each candidate's backlog from the broker, and asks the router. Any trouble reading them (Redis slow or down) sends
the job to its model's shared queue, which is never wrong, only slower.

`loras_prefetch(loras=...)` (activating a LoRA, adding it to a recipe, queueing a sweep) sends, after the commit,
a low-priority `lora_prefetch` task to the prefetch queue (`gpu.w.<name>.prefetch`) of each of the k workers a LoRA
is placed on (per model it fits, as the router places it) that does not hold it yet: the worker fetches it into its
disk cache between jobs, and converts it into the host tier of those models' pipelines when they are loaded, so the
first job on it finds it there. A prefetch is a hint: a broker error is logged, never raised.

`jobs_reroute_from_dead_workers()` (beat) empties the own queues of every worker whose heartbeat has vanished,
sends each job still queued to its model's shared queue and drops the prefetches. It re-sends before it
acknowledges, so a crash in between leaves a duplicate message, never a lost job; claiming is idempotent
(services.job_claim), so a duplicate, or the dead worker coming back and taking its old message, is harmless (the
pattern of lorasite/queueing.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.simple import SimpleQueue

from generation import worker_registry
from generation.models import GenerationJob, JobStatus
from generation.queues import gpu_queue, prefetch_queue, worker_queue
from generation.routing import JobRequest, Reason, Route, WorkerView, placement, route
from loras.models import LoRA, Status
from lorasite.metrics import count_routing
from lorasite.queueing import BROKER_ERRORS, queue_backlog

logger = logging.getLogger(__name__)

TASK_NAME = "generation.tasks.generation_run"
# Prefetches have a queue of their own (gpu.w.<name>.prefetch) rather than a low priority in the job queue, so that
# a worker's backlog is the plain length of its job queue on every broker: the embedded filesystem broker has no
# priorities to tell them apart, and on Redis they would share a level with preview jobs (reading kombu's per-level
# lists would also tie us to its key layout). The low priority still puts them last on Redis: kombu's BRPOP lists
# every consumed queue's level 0 before any queue's level 9, so a prefetch waits behind every user job the worker
# has waiting (preview jobs share its level).
PREFETCH_PRIORITY = 9


def worker_view(worker: worker_registry.LiveWorker, *, backlog: int) -> WorkerView:
    return WorkerView(
        name=worker.name,
        models=frozenset(worker.models),
        backlog=backlog,
        pipelines=frozenset(worker.pipelines),
        merged=worker.tier_sets("merged"),
        resident=worker.tier_sets("resident"),
        host_tier=worker.tier_sets("host_tier"),
        disk=frozenset(worker.disk),
    )


def worker_backlog(worker: worker_registry.LiveWorker) -> int | None:
    """Jobs waiting in the worker's own queue plus the one it runs (its prefetches wait apart: not counted); None
    when the broker does not answer."""
    waiting = queue_backlog(worker_queue(worker.name))
    return None if waiting is None else waiting + (1 if worker.current_job else 0)


def model_backlog(model_key: str) -> int | None:
    """The messages that may hold a job for `model_key`: its shared queue and the own queues of the live workers
    serving it (a routed job waits in one of those); None when the broker does not answer for one of them."""
    queues = [gpu_queue(model_key)]
    queues += [worker_queue(w.name) for w in worker_registry.live_workers() or [] if model_key in w.models]
    total = 0
    for queue in queues:
        size = queue_backlog(queue)
        if size is None:
            return None
        total += size
    return total


def job_route(job: GenerationJob) -> Route:
    """Where `job` goes now (see the module docstring)."""
    if not settings.LORASITE_ROUTING:
        return Route(gpu_queue(job.model_key), None, Reason.OFF)
    request = JobRequest(model_key=job.model_key, loras=tuple(jl.sha256 for jl in job.job_loras.all()))
    workers = worker_registry.live_workers() or []
    views = []
    for worker in workers:
        if job.model_key not in worker.models:
            continue
        backlog = worker_backlog(worker)
        if backlog is not None:  # a worker whose queue the broker cannot size is left out
            views.append(worker_view(worker, backlog=backlog))
    return route(
        request,
        views,
        k=settings.LORASITE_ROUTING_K,
        load_factor=settings.LORASITE_ROUTING_LOAD_FACTOR,
        backlog_bound=settings.LORASITE_ROUTING_BACKLOG_BOUND,
    )


def job_queue(job: GenerationJob) -> str:
    """The queue to publish `job` on (services._send_job)."""
    decision = job_route(job)
    logger.info("Job %s -> %s (%s)", job.id, decision.queue, decision.reason)
    count_routing(decision.reason)
    return decision.queue


def prefetch_targets(*, lora: LoRA, workers: list[worker_registry.LiveWorker]) -> dict[str, list[str]]:
    """The workers the LoRA is placed on, for each model it fits, that do not hold it yet (on disk, and in the host
    tier of each of those models whose pipeline is loaded there): worker name -> the models it is placed there for."""
    from loras.selectors import lora_fits  # loras.selectors reads generation's models: imported when used

    chosen: dict[str, list[str]] = {}
    for fit in lora_fits(lora=lora):
        serving = [worker.name for worker in workers if fit.key in worker.models]
        for name in placement(lora.sha256, serving, k=settings.LORASITE_ROUTING_K) if serving else []:
            chosen.setdefault(name, []).append(fit.key)
    by_name = {worker.name: worker for worker in workers}

    def holds(worker: worker_registry.LiveWorker, keys: list[str]) -> bool:
        host_tier = worker.tier_sets("host_tier")
        loaded = [key for key in keys if key in worker.pipelines]
        return lora.sha256 in worker.disk and all(lora.sha256 in host_tier.get(key, ()) for key in loaded)

    return {name: keys for name, keys in sorted(chosen.items()) if not holds(by_name[name], keys)}


def loras_prefetch(*, loras: Iterable[LoRA]) -> None:
    """After the commit, ask the workers each ready LoRA is placed on to fetch it (see the module docstring)."""
    if not settings.LORASITE_ROUTING:
        return
    ready = [lora for lora in loras if lora.status == Status.READY and lora.sha256 and lora.deleted_at is None]
    if ready:
        transaction.on_commit(lambda: _send_prefetches(ready))


def _send_prefetches(loras: list[LoRA]) -> None:
    from generation.tasks import lora_prefetch

    workers = worker_registry.live_workers() or []
    try:
        for lora in loras:
            for name, model_keys in prefetch_targets(lora=lora, workers=workers).items():
                lora_prefetch.apply_async(
                    kwargs={
                        "sha256": lora.sha256,
                        "file_key": lora.file.name,
                        "size": lora.file_size,
                        "model_keys": model_keys,
                    },
                    queue=prefetch_queue(name),
                    priority=PREFETCH_PRIORITY,
                )
                logger.info("Prefetch of LoRA %s sent to %s", lora.id, name)
    except BROKER_ERRORS as error:
        logger.warning("Prefetch not sent (the job queue refused it): %s", error)


def jobs_reroute_from_dead_workers() -> int:
    """Beat: move the jobs waiting in dead workers' own queues to their models' shared queues (and drop their
    prefetches); the number moved."""
    dead = worker_registry.dead_workers()
    moved = 0
    for name, last_seen in (dead or {}).items():
        drained = _reroute_queue(worker_queue(name))
        if drained is None:
            break  # the broker does not answer: the next beat run tries again
        moved += drained
        # Nothing in a prefetch queue is a job: emptying it only drops hints that no live worker would take.
        if _reroute_queue(prefetch_queue(name)) is None:
            break
        # Forgotten only well after its record expired, so that a job routed to it from a registry read just
        # before the expiry has long arrived in its queue (and been moved) by then.
        if drained == 0 and last_seen < time.time() - 2 * worker_registry.TTL_SECONDS:
            worker_registry.forget(name=name)
    return moved


def _reroute_queue(queue: str) -> int | None:
    """Re-send every job message in `queue` to its model's shared queue; None when the broker fails."""
    from generation.tasks import generation_run
    from lorasite.celery import app

    moved = 0
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
            source = SimpleQueue(connection, queue)
            try:
                while True:
                    try:
                        message = source.get(block=False)
                    except SimpleQueue.Empty:
                        return moved
                    job_id = _job_id(message)
                    job = GenerationJob.objects.filter(id=job_id, status=JobStatus.QUEUED).first() if job_id else None
                    if job is None:
                        # Taken or finished meanwhile (or not a job message): nothing is waiting for it.
                        message.ack()
                        continue
                    generation_run.apply_async(
                        args=[str(job.id)], queue=gpu_queue(job.model_key), priority=message.properties.get("priority")
                    )
                    GenerationJob.objects.filter(id=job.id).update(enqueued_at=timezone.now())
                    message.ack()
                    moved += 1
                    logger.warning("Job %s: no live worker consumes %s; moved to the shared queue", job.id, queue)
            finally:
                source.close()
    except BROKER_ERRORS as error:
        logger.warning("Could not re-route the jobs waiting in %s (%s)", queue, error)
        return None


def _job_id(message) -> str | None:
    """The job id of a `generation_run` message (Celery's task protocol 2: headers name the task, the body is
    [args, kwargs, embed]); None for anything else."""
    if message.headers.get("task") != TASK_NAME:
        return None
    try:
        return str(uuid.UUID(str(message.decode()[0][0])))
    except (IndexError, KeyError, TypeError, ValueError):
        return None
