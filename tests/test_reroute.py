"""Beat's re-route (generation/scaleout.py): a job waiting in the own queue of a worker whose heartbeat vanished is
sent to its model's shared queue; a message for a job no longer queued is dropped. On the real Redis broker (the
three-process version, with a SIGKILLed worker, is in tests/test_scale_out.py)."""

import time

import pytest
from kombu.simple import SimpleQueue

from generation import scaleout, worker_registry
from generation.models import GenerationJob, JobStatus
from generation.queues import gpu_queue, worker_queue
from generation.tasks import generation_run
from lorasite.queueing import queue_backlog

MODEL = "flux1-dev"  # no worker of the suite serves it (no weights): nothing takes the moved message


def drain(queue: str) -> None:
    from lorasite.celery import app

    with app.connection_for_write() as connection:
        source = SimpleQueue(connection, queue)
        try:
            while True:
                source.get(block=False).ack()
        except SimpleQueue.Empty:
            pass
        finally:
            source.close()


def job(workspace, status: str) -> GenerationJob:
    return GenerationJob.objects.create(
        workspace=workspace, model_key=MODEL, model_name="FLUX", kind="image", prompt="x", status=status
    )


@pytest.mark.django_db
def test_a_dead_worker_s_waiting_job_moves_to_the_shared_queue(settings, workspace):
    if not settings.USING_REDIS:
        pytest.skip("needs Redis (required, and so never skipped, in CI)")
    ghost = f"ghost-{time.monotonic_ns()}@host"
    waiting, finished = job(workspace, JobStatus.QUEUED), job(workspace, JobStatus.SUCCEEDED)
    worker_registry.announce(name=ghost, models=[MODEL], started=time.time())
    try:
        for each in (waiting, finished):
            generation_run.apply_async(args=[str(each.id)], queue=worker_queue(ghost))
        assert scaleout.jobs_reroute_from_dead_workers() == 0  # alive: its queue is its own
        assert queue_backlog(worker_queue(ghost)) == 2

        worker_registry.withdraw(name=ghost)
        before = queue_backlog(gpu_queue(MODEL))
        assert scaleout.jobs_reroute_from_dead_workers() == 1
        assert queue_backlog(worker_queue(ghost)) == 0 and queue_backlog(gpu_queue(MODEL)) == before + 1
        waiting.refresh_from_db()
        assert waiting.enqueued_at is not None
        assert ghost in worker_registry.dead_workers()  # forgotten only well after its record expired
    finally:
        drain(gpu_queue(MODEL))
        drain(worker_queue(ghost))
        worker_registry.forget(name=ghost)
