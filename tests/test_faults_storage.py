"""Failing services answer a JSON 503 naming the service (or fail open, for the throttle's cache):
storage and the job queue on the API, the pages and the admin; a Redis of its own killed under sign-in."""

import logging
import shutil
import socket
import subprocess
import time

import pytest
import redis
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from django.test import Client
from kombu.exceptions import OperationalError
from rest_framework.test import APIClient

from loras import selectors as lora_selectors
from loras import services as lora_services
from lorasite.throttles import FailOpenScopedRateThrottle
from tests.factories import UserFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Membership

pytestmark = pytest.mark.django_db


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_redis():
    """A redis-server of the test's own on a free port, without persistence; yields (url, process)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    yield url, process
    process.kill()
    process.wait()


def test_sign_in_fails_open_when_the_throttle_cache_is_killed(own_redis, settings, monkeypatch, caplog):
    url, process = own_redis
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    # On the class the view uses: another test may have set the attribute on a class between it and DRF's base.
    monkeypatch.setattr(FailOpenScopedRateThrottle, "THROTTLE_RATES", {"auth_token": "2/minute"})
    user = UserFactory(username="alice")
    user.set_password("right-password")
    user.save()
    client = APIClient()
    credentials = {"username": "alice", "password": "right-password"}
    # While the cache answers, the throttle counts.
    assert [client.post("/api/v1/auth/token/", credentials).status_code for _ in range(3)] == [200, 200, 429]

    process.kill()
    process.wait()
    with caplog.at_level(logging.WARNING, logger="lorasite.throttles"):
        response = client.post("/api/v1/auth/token/", credentials)
    assert response.status_code == 200
    assert response.json()["token"]
    assert "cache is unavailable" in caplog.text


@pytest.fixture
def storage_down(settings):
    """The S3 storage pointed at a port nothing listens on: boto raises its real connection error."""
    options = {
        **settings.STORAGES["default"]["OPTIONS"],
        "endpoint_url": f"http://127.0.0.1:{_free_port()}",
        "client_config": Config(signature_version="s3v4", retries={"max_attempts": 1}, connect_timeout=1),
    }
    settings.STORAGES = {**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": options}}


def _assert_storage_503(response) -> None:
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert body["service"] == "storage"
    assert "storage is unavailable" in body["message"]


def test_starting_a_multipart_upload_with_storage_down_answers_json_503(storage_down, api, workspace):
    response = api.post(
        f"/api/v1/workspaces/{workspace.slug}/loras/uploads/",
        {"filename": "a.safetensors", "size": 1000},
        format="json",
    )
    _assert_storage_503(response)


def test_an_upload_through_the_app_with_storage_down_answers_json_503(storage_down, api, workspace, tmp_path):
    path = write_lora(tmp_path / "a.safetensors", seed=1, blocks=1)
    with open(path, "rb") as handle:
        response = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart")
    _assert_storage_503(response)


def _library_raising(error: Exception):
    def lora_library(**kwargs):
        raise error

    return lora_library


def test_a_page_with_storage_down_answers_a_503_page_with_the_message(owner, workspace, monkeypatch):
    monkeypatch.setattr(lora_selectors, "lora_library", _library_raising(EndpointConnectionError(endpoint_url="x")))
    client = Client()
    client.force_login(owner)
    response = client.get(f"/w/{workspace.slug}/loras/")
    assert response.status_code == 503
    assert "File storage is unavailable" in response.content.decode()
    assert "Traceback" not in response.content.decode()

    fragment = client.get(f"/w/{workspace.slug}/loras/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="library-results")
    assert fragment.status_code == 503
    assert (
        fragment.content.decode()
        == '<p class="message error" role="alert">File storage is unavailable; try again shortly.</p>'
    )


def test_an_admin_action_with_the_job_queue_down_shows_a_message(admin_client, owner, workspace, monkeypatch, tmp_path):
    lora = ingest_ready(
        actor=Membership.objects.get(user=owner, workspace=workspace),
        path=write_lora(tmp_path / "a.safetensors", seed=2),
    )

    def soft_delete_many(**kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(lora_services, "lora_soft_delete_many", soft_delete_many)
    changelist = "/admin/loras/lora/"
    response = admin_client.post(changelist, {"action": "soft_delete", "_selected_action": [lora.id]}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(changelist, 302)]
    assert "The job queue is unavailable; try again shortly." in [
        str(message) for message in response.context["messages"]
    ]
