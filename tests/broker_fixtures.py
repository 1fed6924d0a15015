"""The job queue failing for the experiment tests: down before anything is sent (the broker does not answer), or
answering the check and then refusing the messages (it failed in between)."""

import pytest
from kombu.exceptions import OperationalError


@pytest.fixture
def broker_down(monkeypatch):
    """The broker at a port nobody listens on: connecting is refused, as with a stopped Redis."""
    from lorasite.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")


@pytest.fixture
def broker_refuses_sends(monkeypatch):
    """The broker answers a connection check but refuses every job's message."""
    from generation.tasks import generation_run

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(generation_run, "apply_async", refuse)
