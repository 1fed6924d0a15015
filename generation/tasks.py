"""Celery tasks of the generation app. The GPU task imports the model runtime (and so torch) only
when it runs, in the worker process.

A worker that consumes GPU queues (`gpu.<model key>`) announces the models of those queues in the
worker registry while it runs: the queues it actually consumes are what it serves."""

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from generation import services, worker_startup  # noqa: F401  (worker_startup: logs memory plans at start)
from generation.queues import model_of_queue
from generation.worker_registry import Heartbeat

# The running worker's heartbeat (one per worker process), stopped on shutdown.
_heartbeats: list[Heartbeat] = []


@shared_task(name="generation.tasks.generation_run", bind=True, acks_late=True, reject_on_worker_lost=True)
def generation_run(self, job_id: str) -> None:
    from generation.worker import execute_job

    execute_job(job_id, worker_name=self.request.hostname or "")


@shared_task(name="generation.tasks.generation_redispatch")
def generation_redispatch() -> int:
    return services.jobs_redispatch()


@shared_task(name="generation.tasks.generation_recover_stalled")
def generation_recover_stalled() -> dict[str, int]:
    return services.jobs_recover_stalled()


@worker_ready.connect
def _announce_served_models(sender, **kwargs) -> None:
    """`sender` is the worker's consumer; `consume_from` holds the queues it was started with (-Q)."""
    models = [key for name in sender.app.amqp.queues.consume_from if (key := model_of_queue(name))]
    if models:
        heartbeat = Heartbeat(name=sender.hostname, models=models)
        heartbeat.start()
        _heartbeats.append(heartbeat)


@worker_shutdown.connect
def _withdraw_served_models(**kwargs) -> None:
    while _heartbeats:
        _heartbeats.pop().stop()
