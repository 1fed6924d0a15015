"""A worker's backlog counts jobs only (generation/scaleout.py): prefetches wait in its prefetch queue, apart from its
job queue, so a worker with prefetches pending still gets the jobs routed to it. On the real Redis broker and on the
embedded filesystem broker of `make run`. A dead worker's prefetches are dropped when its queue is emptied."""

import time

import pytest

from generation import scaleout, worker_registry
from generation.models import GenerationJob, JobLoRA, JobStatus
from generation.queues import prefetch_queue, worker_queue
from generation.routing import Reason
from generation.tasks import generation_run
from lorasite.queueing import queue_backlog
from tests.factories import LoRAFactory
from tests.fault_services import celery_app_on_broker

MODEL = "wan-ti2v-demo"


@pytest.fixture(params=["redis", "filesystem"])
def broker(request, settings, tmp_path):
    """The broker the test publishes to and the registry it reads (which follows the broker)."""
    if request.param == "redis":
        if not settings.USING_REDIS:
            pytest.skip("needs Redis (required, and so never skipped, in CI)")
        yield
        return
    from lorasite.celery import app

    folders = {name: tmp_path / "broker" / name for name in ("queue", "control", "processed")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    previous = app.conf.broker_transport_options
    app.conf.broker_transport_options = {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "control_folder": str(folders["control"]),  # else the current directory
        "processed_folder": str(folders["processed"]),
    }
    try:
        # The app first: its conf reads the settings live, and restores the broker it saw on entering.
        with celery_app_on_broker("filesystem://"):
            settings.CELERY_BROKER_URL = "filesystem://"
            settings.VAR_DIR = tmp_path  # the file registry beside it
            yield
    finally:
        app.conf.broker_transport_options = previous


@pytest.fixture
def ghost(broker):
    """A live worker serving the demo model that no process runs: its queues keep what is sent to them."""
    name = f"backlog-{time.monotonic_ns()}@host"
    worker_registry.announce(name=name, models=[MODEL], started=time.time())
    yield name
    worker_registry.withdraw(name=name)
    scaleout.jobs_reroute_from_dead_workers()  # empties its queues (whatever the test left there)
    worker_registry.forget(name=name)


def the_worker(name: str) -> worker_registry.LiveWorker:
    return {worker.name: worker for worker in worker_registry.live_workers()}[name]


def routed_job(workspace, lora) -> GenerationJob:
    job = GenerationJob.objects.create(
        workspace=workspace, model_key=MODEL, model_name="Wan demo", kind="video", prompt="x", status=JobStatus.QUEUED
    )
    JobLoRA.objects.create(
        job=job,
        lora=lora,
        position=0,
        lora_ref=lora.id,
        name=lora.name,
        version=lora.version,
        sha256=lora.sha256,
        file_key=lora.file.name,
        file_size=lora.file_size,
        weight=1.0,
        expert="high",
    )
    return job


@pytest.mark.django_db
def test_pending_prefetches_are_not_backlog_and_a_dead_worker_s_are_dropped(ghost, workspace, settings):
    # Every live worker is among each LoRA's k (the suite's own worker may be live too).
    settings.LORASITE_ROUTING_K = 10
    loras = [LoRAFactory(workspace=workspace, base_model="wan-demo", module_shapes={}) for _ in range(3)]
    scaleout._send_prefetches(loras)
    assert queue_backlog(prefetch_queue(ghost)) == 3
    assert queue_backlog(worker_queue(ghost)) == 0
    assert scaleout.worker_backlog(the_worker(ghost)) == 0

    # The ghost alone has the LoRA on disk: the job is routed to it, prefetches pending or not.
    status = {"disk": [loras[0].sha256], "pipelines": [MODEL]}
    worker_registry.announce(name=ghost, models=[MODEL], started=time.time(), status=status)
    job = routed_job(workspace, loras[0])
    decision = scaleout.job_route(job)
    assert (decision.worker, decision.reason) == (ghost, Reason.AFFINITY)
    generation_run.apply_async(args=[str(job.id)], queue=decision.queue)
    assert scaleout.worker_backlog(the_worker(ghost)) == 1

    # Dead, its queues are emptied: the prefetches dropped (no live worker would take them), the message of a job
    # finished meanwhile acknowledged (tests/test_reroute.py moves a waiting one to the shared queue).
    GenerationJob.objects.filter(id=job.id).update(status=JobStatus.SUCCEEDED)
    worker_registry.withdraw(name=ghost)
    assert scaleout.jobs_reroute_from_dead_workers() == 0
    assert queue_backlog(prefetch_queue(ghost)) == 0 and queue_backlog(worker_queue(ghost)) == 0
