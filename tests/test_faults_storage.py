"""Failing services answer a JSON 503 naming the service (or fail open, for the throttle's cache):
storage and the job queue on the API, the pages and the admin; a Redis of its own killed under sign-in."""

import logging
import shutil
import socket
import subprocess
import time

import pytest
import redis
from django.test import Client
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests.factories import UserFactory

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
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"auth_token": "2/minute"})
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
