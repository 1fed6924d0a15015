"""What a GPU worker does at start and stop besides consuming its queues: log the memory plan of every model it
serves (what `manage.py gpu_plan` prints), so a model that cannot fit shows in the log before any job fails on it;
consume its own queues, `gpu.w.<node name>` (jobs the router sends to it) and `gpu.w.<node name>.prefetch` (LoRAs
to fetch ahead of them); and announce itself in the worker registry while it runs, once more when it starts a job
and when the job's adapters are applied (with jobs shorter than the heartbeat the router would otherwise see a
running worker as idle, and adapters where they were), and after every job, so the router sees what the job left
loaded.

A worker is a GPU worker when it consumes model queues (`gpu.<model key>`): the queues it was started with (-Q)
are what it serves."""

import logging

from celery.signals import task_postrun, worker_ready, worker_shutdown

from generation.model_registry import model_registry
from generation.queues import model_of_queue, prefetch_queue, worker_queue
from generation.runtime.memory_plan import MemoryPlanError
from generation.worker_registry import Heartbeat

logger = logging.getLogger(__name__)

# The running worker's heartbeat (one per worker process), stopped on shutdown.
_heartbeats: list[Heartbeat] = []


def _served_models(sender) -> list[str]:
    """`sender` is the worker's consumer; `consume_from` holds the queues it was started with (-Q)."""
    return [key for name in sender.app.amqp.queues.consume_from if (key := model_of_queue(name))]


@worker_ready.connect
def log_memory_plans(sender, **kwargs) -> None:
    keys = _served_models(sender)
    if not keys:
        return  # not a GPU worker
    from generation.worker import model_plan  # torch: in the worker process only

    registry = model_registry()
    for key in keys:
        model = registry.get(key)
        if model is None:
            logger.warning("Memory plan: this worker consumes the queue of unknown model %s", key)
            continue
        try:
            logger.info("Memory plan: %s", "\n".join(model_plan(model).describe()))
        except MemoryPlanError as error:
            logger.warning("Memory plan: %s cannot run on this worker: %s", key, error)


@worker_ready.connect
def announce_worker(sender, **kwargs) -> None:
    models = _served_models(sender)
    if not models:
        return
    from generation.worker import ANNOUNCE_HOOKS, worker_status  # torch: in the worker process only

    # Its own queues first, then the record that makes the router send jobs there.
    queue = worker_queue(sender.hostname)
    sender.add_task_queue(queue)
    sender.add_task_queue(prefetch_queue(sender.hostname))
    logger.info("Consuming %s, the queue of jobs routed to this worker (and its prefetches: %s.prefetch)", queue, queue)
    heartbeat = Heartbeat(name=sender.hostname, models=models, status=lambda: {"queue": queue, **worker_status()})
    heartbeat.start()
    _heartbeats.append(heartbeat)
    ANNOUNCE_HOOKS.append(heartbeat.beat)


@task_postrun.connect
def announce_after_job(**kwargs) -> None:
    for heartbeat in _heartbeats:
        heartbeat.beat()


@worker_shutdown.connect
def withdraw_worker(**kwargs) -> None:
    if not _heartbeats:
        return
    from generation.worker import ANNOUNCE_HOOKS  # imported already: this process announced itself

    while _heartbeats:
        heartbeat = _heartbeats.pop()
        ANNOUNCE_HOOKS.remove(heartbeat.beat)
        heartbeat.stop()
