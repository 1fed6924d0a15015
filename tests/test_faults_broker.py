"""The job queue (Redis) down: a redis-server of the test's own is killed, requests that queue work answer a
JSON 503 with the row saved, and once it is back beat's re-send gets every row to a real worker and done."""

import time
import uuid
from datetime import timedelta

import pytest
import requests
from django.conf import settings
from django.utils import timezone

from generation import services as generation_services
from generation.models import GenerationJob, JobStatus
from loras.models import LoRA, LoRAUpload, Status
from loras.services import dispatch
from tests.fault_services import (
    RedisServer,
    celery_app_on_broker,
    kill_process_group,
    start_celery_worker,
    wait_until,
    worker_environment,
)
from tests.lora_files import write_lora

QUEUE_DOWN = "The job queue is unavailable; your job is saved and will start when it is back."


@pytest.fixture
def broker(tmp_path):
    """A redis-server of this test's own, which this process's Celery app publishes to."""
    if not settings.USING_POSTGRES:
        pytest.skip("the worker process needs the PostgreSQL test database (required in CI)")
    server = RedisServer(tmp_path)
    server.start()
    with celery_app_on_broker(server.url):
        yield server
    server.stop()


def multipart_upload(api, base: str, path) -> dict:
    """Start a multipart upload and PUT its parts straight to the S3 API; the `complete` body."""
    started = api.post(f"{base}/loras/uploads/", {"filename": path.name, "size": path.stat().st_size}, format="json")
    assert started.status_code == 201, started.json()
    started = started.json()
    data, parts = path.read_bytes(), []
    for part in started["parts"]:
        offset = (part["part_number"] - 1) * started["part_size"]
        response = requests.put(part["url"], data=data[offset : offset + started["part_size"]], timeout=30)
        assert response.status_code == 200, response.text
        parts.append({"part_number": part["part_number"], "etag": response.headers["ETag"]})
    return {"upload_id": started["upload_id"], "parts": parts}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_broker_down_answers_503_keeps_the_rows_and_beat_sends_them_when_it_is_back(
    broker, api, workspace, demo_models, tmp_path, s3_keys
):
    base = f"/api/v1/workspaces/{workspace.slug}"
    upload = multipart_upload(
        api, base, write_lora(tmp_path / "style.safetensors", family="wan-demo", blocks=2, std=0.3)
    )
    broker.stop()

    started = time.monotonic()
    response = api.post(f"{base}/generations/", {"model": "wan22-a14b-demo", "prompt": "a lighthouse"}, format="json")
    assert time.monotonic() - started < 30  # the request does not hang on the missing broker
    assert response.status_code == 503 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["message"] == QUEUE_DOWN and body["service"] == "job queue"
    job = GenerationJob.objects.get(id=body["job_id"])
    assert job.status == JobStatus.QUEUED and job.enqueued_at is None

    response = api.post(
        f"{base}/loras/uploads/{upload['upload_id']}/complete/", {"parts": upload["parts"]}, format="json"
    )
    assert response.status_code == 503 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["message"] == dispatch.QUEUE_DOWN_MESSAGE and body["service"] == "job queue"
    lora = LoRA.objects.get(id=body["lora_id"])
    assert lora.status == Status.PROCESSING and lora.enqueued_at is None and not LoRAUpload.objects.exists()
    assert s3_keys(f"workspaces/{workspace.id}/") == [lora.file.name]  # the assembled object is kept

    # Beat runs while the broker is still down: nothing is lost, nothing is marked sent.
    later = timezone.now() + timedelta(minutes=1)
    assert generation_services.jobs_redispatch(now=later) == 0
    assert dispatch.loras_ingest_sweep(now=later) == {"resent": 0, "failed": 0}

    broker.start()
    worker = start_celery_worker(
        env=worker_environment(broker.url, tmp_path / "worker-var"),
        name="broker-back",
        log_path=tmp_path / "worker.log",
    )
    try:
        assert generation_services.jobs_redispatch(now=later) == 1
        assert dispatch.loras_ingest_sweep(now=later) == {"resent": 1, "failed": 0}
        wait_until(
            lambda: (
                GenerationJob.objects.get(id=job.id).is_finished
                and LoRA.objects.get(id=lora.id).status != Status.PROCESSING
            ),
            timeout=240,
            what="the re-sent job and ingest to finish",
            interval=0.5,
        )
    finally:
        kill_process_group(worker)
    job.refresh_from_db()
    lora.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1 and job.enqueued_at, job.error
    assert lora.status == Status.READY and lora.enqueued_at, lora.error
    stored = [lora.file.name, job.output_key, job.poster_key, job.thumb_key]
    assert sorted(s3_keys(f"workspaces/{workspace.id}/")) == sorted(stored)
    # A second beat run finds nothing left to send.
    assert generation_services.jobs_redispatch(now=later) == 0


@pytest.mark.django_db
class TestIngestSweep:
    """`lora_ingest` raising is marked failed by its on_failure; a row still `processing` past the bound
    (its worker lost, the task never reporting) is failed by beat, its copy deleted, and its card stops polling."""

    def stuck_lora(self, workspace, owner, s3_server, *, queued_ago: float) -> LoRA:
        directory = uuid.uuid4().hex
        key = f"workspaces/{workspace.id}/loras/{directory}/stuck.safetensors"
        s3_server.put_object(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=key, Body=b"bytes")
        return LoRA.objects.create(
            workspace=workspace,
            created_by=owner,
            name=f"Stuck {directory[:6]}",
            original_filename="stuck.safetensors",
            file=key,
            file_size=5,
            status=Status.PROCESSING,
            enqueued_at=timezone.now() - timedelta(seconds=queued_ago),
        )

    def test_a_row_processing_past_the_bound_fails_with_the_reason_and_its_object_goes(
        self, workspace, owner, s3_server, s3_keys, client, django_capture_on_commit_callbacks
    ):
        bound = settings.LORASITE_INGEST_STUCK_SECONDS
        stuck = self.stuck_lora(workspace, owner, s3_server, queued_ago=bound + 1)
        # Sent recently enough not to count as lost either (re-sent from an empty queue after RESEND_AFTER).
        recent = self.stuck_lora(workspace, owner, s3_server, queued_ago=settings.LORASITE_RESEND_AFTER_SECONDS - 60)
        client.force_login(owner)
        card_url = f"/w/{workspace.slug}/loras/{stuck.id}/card/"
        assert 'hx-trigger="every 2s"' in client.get(card_url, HTTP_HX_REQUEST="true").content.decode()

        with django_capture_on_commit_callbacks(execute=True):
            assert dispatch.loras_ingest_sweep() == {"resent": 0, "failed": 1}
        stuck.refresh_from_db()
        recent.refresh_from_db()
        assert stuck.status == Status.FAILED and f"within {bound} s" in stuck.error and not stuck.file
        assert recent.status == Status.PROCESSING  # still within its bound: left alone
        assert s3_keys(f"workspaces/{workspace.id}/") == [recent.file.name]
        card = client.get(card_url, HTTP_HX_REQUEST="true").content.decode()
        assert "hx-trigger" not in card and f"within {bound} s" in card

    def test_a_row_the_broker_never_took_is_resent_not_failed(self, workspace, owner, s3_server, monkeypatch):
        lora = self.stuck_lora(workspace, owner, s3_server, queued_ago=0)
        LoRA.objects.filter(id=lora.id).update(enqueued_at=None)
        sent = []
        monkeypatch.setattr("loras.tasks.lora_ingest.apply_async", lambda args: sent.append(args))
        later = timezone.now() + timedelta(minutes=1)  # past the grace for its own request's send
        assert dispatch.loras_ingest_sweep(now=later) == {"resent": 1, "failed": 0}
        lora.refresh_from_db()
        assert sent == [[lora.id]] and lora.status == Status.PROCESSING and lora.enqueued_at


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_messages_the_broker_took_and_then_lost_are_re_sent_by_beat(
    broker, api, workspace, demo_models, tmp_path, s3_keys
):
    """Redis restarted without persistence loses the queued messages while the rows say they were sent:
    beat re-sends them once their queue is empty (and not while a backlog still holds them)."""
    base = f"/api/v1/workspaces/{workspace.slug}"
    upload = multipart_upload(
        api, base, write_lora(tmp_path / "style.safetensors", family="wan-demo", blocks=2, std=0.3)
    )
    response = api.post(f"{base}/generations/", {"model": "wan22-a14b-demo", "prompt": "a lighthouse"}, format="json")
    assert response.status_code == 201, response.json()
    job = GenerationJob.objects.get(id=response.json()["id"])
    response = api.post(
        f"{base}/loras/uploads/{upload['upload_id']}/complete/", {"parts": upload["parts"]}, format="json"
    )
    assert response.status_code == 201, response.json()
    lora = LoRA.objects.get(id=response.json()["id"])
    assert job.enqueued_at and lora.enqueued_at  # the broker took both messages

    later = timezone.now() + timedelta(seconds=settings.LORASITE_RESEND_AFTER_SECONDS + 60)
    # The messages are still in their queues: a long wait alone is no reason to send again.
    assert generation_services.jobs_redispatch(now=later) == 0
    assert dispatch.loras_ingest_sweep(now=later) == {"resent": 0, "failed": 0}
    # Too soon after the send, nothing is re-sent even from an empty queue.
    broker.stop()
    broker.start()
    assert generation_services.jobs_redispatch() == 0
    assert dispatch.loras_ingest_sweep() == {"resent": 0, "failed": 0}

    assert generation_services.jobs_redispatch(now=later) == 1
    assert dispatch.loras_ingest_sweep(now=later) == {"resent": 1, "failed": 0}
    worker = start_celery_worker(
        env=worker_environment(broker.url, tmp_path / "worker-var"),
        name="broker-lost",
        log_path=tmp_path / "worker.log",
    )
    try:
        wait_until(
            lambda: (
                GenerationJob.objects.get(id=job.id).is_finished
                and LoRA.objects.get(id=lora.id).status != Status.PROCESSING
            ),
            timeout=240,
            what="the re-sent job and ingest to finish",
            interval=0.5,
        )
    finally:
        kill_process_group(worker)
    job.refresh_from_db()
    lora.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1, job.error
    assert lora.status == Status.READY, lora.error
    stored = [lora.file.name, job.output_key, job.poster_key, job.thumb_key]
    assert sorted(s3_keys(f"workspaces/{workspace.id}/")) == sorted(stored)


@pytest.mark.django_db
def test_a_routed_job_waiting_in_a_live_workers_own_queue_is_not_taken_for_lost(workspace, owner, monkeypatch):
    """With affinity routing a job waits in a worker's own queue while its model's shared queue is empty."""
    from generation import scaleout, worker_registry
    from generation.queues import gpu_queue, worker_queue

    model = "wan22-a14b-demo"
    job = GenerationJob.objects.create(
        workspace=workspace,
        created_by=owner,
        model_key=model,
        model_name="Wan demo",
        kind="video",
        prompt="a lighthouse",
        enqueued_at=timezone.now() - timedelta(seconds=settings.LORASITE_RESEND_AFTER_SECONDS + 60),
    )
    worker = worker_registry.LiveWorker(name="w1@host", models=(model,), started=0.0, last_seen=0.0)
    monkeypatch.setattr(worker_registry, "live_workers", lambda: [worker])
    backlogs = {gpu_queue(model): 0, worker_queue(worker.name): 1}
    monkeypatch.setattr(scaleout, "queue_backlog", lambda queue: backlogs[queue])
    sent = []
    monkeypatch.setattr(generation_services, "_send_job", lambda job: sent.append(job.id))

    assert generation_services.jobs_redispatch() == 0 and sent == []
    backlogs[worker_queue(worker.name)] = 0  # now no queue can hold its message: lost, and sent again
    assert generation_services.jobs_redispatch() == 1 and sent == [job.id]
