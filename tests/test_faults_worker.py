"""A worker lost mid-job and the job state machine: a real worker process SIGKILLed with short limits gets its
job its one more attempt from beat; a worker's late or second report never moves a finished job."""

import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from generation import services
from generation.models import GenerationJob, JobStatus
from lorasite.object_store import get_object_store
from tests.fault_services import (
    RedisServer,
    celery_app_on_broker,
    kill_process_group,
    start_celery_worker,
    wait_until,
    worker_environment,
)
from workspaces.models import Role

WAN = "wan22-a14b-demo"
# Short limits for the killed worker, its successor and beat (this process) alike.
SOFT_LIMIT, HARD_LIMIT = 25, 30


@pytest.fixture
def actor(workspace, member_of):
    return workspace.memberships.get(user=member_of(Role.OWNER))


@pytest.fixture
def job(actor, demo_models) -> GenerationJob:
    return services.generation_create(actor=actor, model=WAN, prompt="x")


def running(job: GenerationJob, *, attempts: int = 1, started_ago: float = 0.0) -> GenerationJob:
    started = timezone.now() - timedelta(seconds=started_ago)
    GenerationJob.objects.filter(id=job.id).update(
        status=JobStatus.RUNNING, attempts=attempts, worker="w1", started_at=started, attempt_started_at=started
    )
    job.refresh_from_db()
    return job


@pytest.mark.django_db
class TestStateMachine:
    def test_a_failed_job_never_becomes_succeeded_and_its_late_output_is_deleted(
        self, job, s3_keys, django_capture_on_commit_callbacks
    ):
        running(job)
        services.job_fail(job_id=str(job.id), error="boom", timings={})
        key = f"workspaces/{job.workspace_id}/outputs/{job.id}/output.mp4"
        get_object_store().save_stream(key, io.BytesIO(b"late output"))
        assert key in s3_keys(f"workspaces/{job.workspace_id}/outputs/")
        with django_capture_on_commit_callbacks(execute=True):
            services.job_succeed(job_id=str(job.id), output_key=key, poster_key="", timings={"inference": 1.0})
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED and job.error == "boom" and job.output_key == "" and job.progress != 100
        assert key not in s3_keys(f"workspaces/{job.workspace_id}/outputs/")

    @pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.CANCELLED, JobStatus.QUEUED])
    def test_job_fail_moves_only_a_running_job(self, job, status):
        GenerationJob.objects.filter(id=job.id).update(status=status)
        services.job_fail(job_id=str(job.id), error="late", timings={})
        job.refresh_from_db()
        assert job.status == status and job.error == ""

    def test_a_second_message_for_a_live_attempt_is_dropped(self, job):
        assert services.job_claim(job_id=str(job.id), worker="w1").attempts == 1
        assert services.job_claim(job_id=str(job.id), worker="w2") is None  # a double send: harmless
        job.refresh_from_db()
        assert job.status == JobStatus.RUNNING and job.attempts == 1 and job.worker == "w1"

    def test_each_attempt_has_its_own_start_and_a_dead_attempt_is_claimed_again(self, job):
        first_start = running(
            job, started_ago=settings.CELERY_TASK_TIME_LIMIT + services.STALL_MARGIN_SECONDS + 1
        ).started_at
        claimed = services.job_claim(job_id=str(job.id), worker="w2")
        assert claimed.attempts == 2 and claimed.started_at == first_start and claimed.attempt_started_at > first_start

    def test_beat_leaves_a_live_attempt_alone(self, job):
        running(job, started_ago=settings.CELERY_TASK_TIME_LIMIT)  # past the hard limit, not past the cutoff
        assert services.jobs_recover_stalled() == {"requeued": 0, "failed": 0, "cancelled": 0}

    def test_beat_requeues_a_stalled_job_after_the_hard_limit_not_the_visibility_timeout(self, job):
        # Before: beat failed it at hard limit + 120 s, while Redis would only redeliver at hard limit + 600 s.
        stalled_for = settings.CELERY_TASK_TIME_LIMIT + services.STALL_MARGIN_SECONDS + 1
        assert stalled_for < settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", float("inf"))
        running(job, started_ago=stalled_for)
        assert services.jobs_recover_stalled() == {"requeued": 1, "failed": 0, "cancelled": 0}
        job.refresh_from_db()
        assert job.status == JobStatus.QUEUED and job.attempts == 1 and job.enqueued_at is None

    def test_beat_ends_a_cancelled_job_whose_worker_died(self, job):
        running(job, started_ago=settings.CELERY_TASK_TIME_LIMIT + services.STALL_MARGIN_SECONDS + 1)
        GenerationJob.objects.filter(id=job.id).update(cancel_requested=True)
        assert services.jobs_recover_stalled()["cancelled"] == 1
        job.refresh_from_db()
        assert job.status == JobStatus.CANCELLED


@pytest.fixture
def broker(tmp_path):
    if not settings.USING_POSTGRES:
        pytest.skip("the worker processes need the PostgreSQL test database (required in CI)")
    server = RedisServer(tmp_path)
    server.start()
    with celery_app_on_broker(server.url):
        yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@override_settings(CELERY_TASK_SOFT_TIME_LIMIT=SOFT_LIMIT, CELERY_TASK_TIME_LIMIT=HARD_LIMIT)
def test_a_sigkilled_worker_s_job_runs_once_more_on_another_worker(
    broker, actor, demo_models, tmp_path, monkeypatch, s3_keys
):
    monkeypatch.setattr(services, "STALL_MARGIN_SECONDS", 1)
    limits = {"LORASITE_TASK_SOFT_TIME_LIMIT": str(SOFT_LIMIT), "LORASITE_TASK_TIME_LIMIT": str(HARD_LIMIT)}
    env = worker_environment(broker.url, tmp_path / "worker-var", **limits)
    first = start_celery_worker(env=env, name="doomed", log_path=tmp_path / "doomed.log")
    try:
        job = services.generation_create(actor=actor, model=WAN, prompt="slow", params={"steps": 10, "num_frames": 9})
        wait_until(
            lambda: GenerationJob.objects.get(id=job.id).status == JobStatus.RUNNING,
            timeout=60,
            what="the job to start",
        )
    finally:
        kill_process_group(first)  # SIGKILL mid-job: no cleanup, no acknowledgement, no report
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.attempts == 1 and job.worker.startswith("doomed@")
    assert services.jobs_recover_stalled()["requeued"] == 0  # the attempt may still be alive as far as beat knows

    second = start_celery_worker(env=env, name="successor", log_path=tmp_path / "successor.log")
    try:
        wait_until(
            lambda: services.jobs_recover_stalled()["requeued"],
            timeout=HARD_LIMIT + 10,
            what="beat to re-queue",
            interval=1,
        )
        wait_until(
            lambda: GenerationJob.objects.get(id=job.id).is_finished,
            timeout=180,
            what="the second attempt",
            interval=0.5,
        )
    finally:
        kill_process_group(second)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2 and job.worker.startswith("successor@") and job.attempt_started_at > job.started_at
    assert sorted(s3_keys(f"workspaces/{job.workspace_id}/")) == sorted([job.output_key, job.poster_key, job.thumb_key])
