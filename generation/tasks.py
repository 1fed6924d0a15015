"""Celery tasks of the generation app. The GPU task imports the model runtime (and so torch) only
when it runs, in the worker process. What a GPU worker does at start and stop (memory plans, its own
queue, the registry heartbeat) is in generation/worker_startup.py."""

from celery import shared_task

from generation import scaleout, services, worker_startup  # noqa: F401  (worker_startup: its signal handlers)


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


@shared_task(name="generation.tasks.generation_reroute")
def generation_reroute() -> int:
    return scaleout.jobs_reroute_from_dead_workers()


@shared_task(name="generation.tasks.lora_prefetch")
def lora_prefetch(*, sha256: str, file_key: str, size: int, model_keys: list[str]) -> None:
    """On a GPU worker, between jobs (it is sent at low priority): fetch a LoRA into the disk cache and host tier."""
    from generation.worker import prefetch_lora

    prefetch_lora(sha256=sha256, file_key=file_key, size=size, model_keys=model_keys)


@shared_task(name="generation.tasks.usage_counters_rebuild")
def usage_counters_rebuild() -> int:
    """Beat, daily: recompute every workspace's usage counters, repairing what writes outside the services (a user
    deleted in the admin, with their ratings) left behind; each workspace in its own short transaction."""
    from generation.usage import usage_counters_rebuild as rebuild
    from workspaces.models import Workspace

    return sum(rebuild(workspace_id=workspace_id) for workspace_id in Workspace.objects.values_list("id", flat=True))
