"""The worker registry (heartbeat records in the real Redis, or files without it) and what it shows:
`served` per model in /api/v1/models/ and a queued job's `waiting_reason` in the API and the pages."""

import time

import pytest
from django.conf import settings as django_settings

from generation import worker_registry
from generation.models import GenerationJob, JobStatus
from tests.factories import MembershipFactory
from workspaces.models import Role

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture(params=["redis", "files"])
def registry(request, settings, tmp_path):
    """The registry on the real Redis broker, then on files under VAR_DIR (the embedded broker)."""
    if request.param == "redis":
        if not django_settings.USING_REDIS:
            pytest.skip("needs Redis (required, and so never skipped, in CI)")
    else:
        settings.CELERY_BROKER_URL = "filesystem://"
        settings.VAR_DIR = tmp_path
    return request.param


@pytest.fixture
def worker_name(request):
    """A node name no other test or worker uses; its record is withdrawn afterwards."""
    name = f"test-{request.node.name}-{time.monotonic_ns()}@host"
    yield name
    worker_registry.withdraw(name=name)
    worker_registry.forget(name=name)


def names() -> set[str]:
    return {worker.name for worker in worker_registry.live_workers()}


def test_announce_then_withdraw(registry, worker_name):
    worker_registry.announce(name=worker_name, models=["wan22-t2v-a14b", "flux1-dev"], started=123.0)
    [worker] = [worker for worker in worker_registry.live_workers() if worker.name == worker_name]
    assert worker.models == ("wan22-t2v-a14b", "flux1-dev") and worker.started == 123.0
    assert worker.last_seen == pytest.approx(time.time(), abs=5)
    assert {"wan22-t2v-a14b", "flux1-dev"} <= worker_registry.models_served()
    worker_registry.withdraw(name=worker_name)
    assert worker_name not in names()


def test_a_record_expires_without_heartbeats(registry, worker_name, monkeypatch):
    monkeypatch.setattr(worker_registry, "TTL_SECONDS", 1)
    worker_registry.announce(name=worker_name, models=["flux1-dev"], started=time.time())
    assert worker_name in names()
    time.sleep(1.3)
    assert worker_name not in names()


def test_the_heartbeat_keeps_a_worker_listed_until_it_stops(registry, worker_name, monkeypatch):
    monkeypatch.setattr(worker_registry, "TTL_SECONDS", 1)
    monkeypatch.setattr(worker_registry, "HEARTBEAT_SECONDS", 0.2)
    heartbeat = worker_registry.Heartbeat(name=worker_name, models=["flux1-dev"])
    heartbeat.start()
    try:
        time.sleep(1.5)  # past the TTL of the first record: only the refreshes keep it
        assert worker_name in names()
    finally:
        heartbeat.stop()
    assert worker_name not in names()
    assert not heartbeat._thread.is_alive()


def test_a_record_carries_what_the_worker_holds_and_ignores_unknown_fields(registry, worker_name):
    status = {
        "queue": f"gpu.w.{worker_name}",
        "pipelines": ["flux1-dev"],
        "adapters": {"flux1-dev": {"merged": ["a" * 64], "resident": ["a" * 64, "b" * 64], "host_tier": []}},
        "disk": ["c" * 64],
        "current_job": "job-1",
        "counters": {"jobs": 2},
        "from_a_newer_worker": True,
    }
    worker_registry.announce(name=worker_name, models=["flux1-dev"], started=1.0, status=status)
    [worker] = [worker for worker in worker_registry.live_workers() if worker.name == worker_name]
    assert worker.queue == f"gpu.w.{worker_name}" and worker.pipelines == ("flux1-dev",) and worker.disk == ("c" * 64,)
    assert worker.tier_sets("resident") == {"flux1-dev": frozenset({"a" * 64, "b" * 64})}
    assert worker.current_job == "job-1" and worker.counters == {"jobs": 2}


def test_a_withdrawn_or_expired_worker_is_dead_until_forgotten(registry, worker_name, monkeypatch):
    monkeypatch.setattr(worker_registry, "TTL_SECONDS", 1)
    worker_registry.announce(name=worker_name, models=["flux1-dev"], started=time.time())
    assert worker_name not in worker_registry.dead_workers()
    worker_registry.withdraw(name=worker_name)  # its queue may still hold jobs: it stays known
    assert worker_registry.dead_workers()[worker_name] == pytest.approx(time.time(), abs=5)
    worker_registry.forget(name=worker_name)
    assert worker_name not in worker_registry.dead_workers()


def test_a_status_that_cannot_be_read_still_sends_the_heartbeat(registry, worker_name, caplog):
    def broken() -> dict:
        raise RuntimeError("OrderedDict mutated during iteration")

    heartbeat = worker_registry.Heartbeat(name=worker_name, models=["flux1-dev"], status=broken)
    heartbeat.beat()
    assert worker_name in names() and "Worker status could not be read" in caplog.text


def test_an_unreachable_redis_reads_as_unknown(settings):
    settings.CELERY_BROKER_URL = UNREACHABLE_REDIS
    assert worker_registry.live_workers() is None
    assert worker_registry.models_served() is None


def test_an_unreachable_redis_does_not_stop_the_heartbeat_thread(settings, caplog):
    settings.CELERY_BROKER_URL = UNREACHABLE_REDIS
    heartbeat = worker_registry.Heartbeat(name="lonely@host", models=["flux1-dev"])
    heartbeat.start()
    heartbeat.stop()
    assert "Worker heartbeat failed" in caplog.text and "Could not withdraw" in caplog.text


# --- what the API and the pages show ---------------------------------------------------------------


def queued_job(workspace, model_key: str = "wan22-t2v-a14b", model_name: str = "Wan 2.2 T2V-A14B", **fields):
    """A job row as generation_create leaves it (the real models have no weights here to create one)."""
    user = MembershipFactory(workspace=workspace, role=Role.MEMBER).user
    return GenerationJob.objects.create(
        workspace=workspace,
        created_by=user,
        model_key=model_key,
        model_name=model_name,
        kind="video",
        prompt="a lighthouse",
        params={"width": 832, "height": 480, "num_frames": 33},
        **fields,
    )


@pytest.mark.django_db
def test_models_endpoint_says_whether_a_worker_serves_each_model(registry, api, worker_name):
    worker_registry.announce(name=worker_name, models=["wan22-t2v-a14b"], started=time.time())
    served = {model["key"]: model["served"] for model in api.get("/api/v1/models/").json()}
    assert served["wan22-t2v-a14b"] is True and served["flux1-dev"] is False


@pytest.mark.django_db
def test_models_endpoint_says_unknown_when_redis_is_down(api, settings):
    settings.CELERY_BROKER_URL = UNREACHABLE_REDIS
    response = api.get("/api/v1/models/")
    assert response.status_code == 200
    assert {model["served"] for model in response.json()} == {None}


@pytest.mark.django_db
def test_a_queued_job_says_no_worker_serves_its_model(registry, api, workspace, worker_name):
    job = queued_job(workspace)
    detail = f"/api/v1/workspaces/{workspace.slug}/generations/{job.id}/"
    assert api.get(detail).json()["waiting_reason"] == "No worker serves Wan 2.2 T2V-A14B right now"
    [listed] = api.get(f"/api/v1/workspaces/{workspace.slug}/generations/").json()["results"]
    assert listed["waiting_reason"] == "No worker serves Wan 2.2 T2V-A14B right now"

    worker_registry.announce(name=worker_name, models=["wan22-t2v-a14b"], started=time.time())
    assert api.get(detail).json()["waiting_reason"] == ""


@pytest.mark.django_db
def test_only_queued_jobs_wait(registry, api, workspace):
    job = queued_job(workspace, status=JobStatus.RUNNING)
    assert api.get(f"/api/v1/workspaces/{workspace.slug}/generations/{job.id}/").json()["waiting_reason"] == ""


@pytest.mark.django_db
def test_waiting_reason_when_redis_is_down(api, workspace, settings):
    settings.CELERY_BROKER_URL = UNREACHABLE_REDIS
    job = queued_job(workspace)
    response = api.get(f"/api/v1/workspaces/{workspace.slug}/generations/{job.id}/")
    assert response.status_code == 200
    assert response.json()["waiting_reason"] == (
        "Cannot tell whether a worker serves Wan 2.2 T2V-A14B: the worker registry is unreachable"
    )


@pytest.mark.django_db
def test_the_job_page_and_jobs_list_show_the_waiting_reason(registry, client, owner, workspace, worker_name):
    job = queued_job(workspace)
    client.force_login(owner)
    message = "No worker serves Wan 2.2 T2V-A14B right now"
    for path in (f"/w/{workspace.slug}/jobs/", f"/w/{workspace.slug}/jobs/{job.id}/"):
        assert message in client.get(path).content.decode(), path

    worker_registry.announce(name=worker_name, models=["wan22-t2v-a14b"], started=time.time())
    for path in (f"/w/{workspace.slug}/jobs/", f"/w/{workspace.slug}/jobs/{job.id}/"):
        page = client.get(path).content.decode()
        assert "Waiting for a GPU worker" in page and message not in page, path


@pytest.mark.django_db
def test_the_job_page_renders_when_redis_is_down(client, owner, workspace, settings):
    settings.CELERY_BROKER_URL = UNREACHABLE_REDIS
    job = queued_job(workspace)
    client.force_login(owner)
    response = client.get(f"/w/{workspace.slug}/jobs/{job.id}/")
    assert response.status_code == 200 and "the worker registry is unreachable" in response.content.decode()
