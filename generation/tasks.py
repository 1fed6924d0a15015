"""Celery tasks of the generation app. The GPU task imports the model runtime (and so torch) only
when it runs, in the worker process."""

from celery import shared_task

from generation import services


@shared_task(name="generation.tasks.generation_run", bind=True, acks_late=True, reject_on_worker_lost=True)
def generation_run(self, job_id: str) -> None:
    from generation.worker import execute_job

    execute_job(job_id, worker_name=self.request.hostname or "")


@shared_task(name="generation.tasks.generation_fail_stuck")
def generation_fail_stuck() -> int:
    return services.jobs_fail_stuck()
