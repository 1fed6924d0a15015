"""One Celery queue per model: queue names, the queues a worker consumes (LORASITE_WORKER_MODELS),
the gpu_worker and run_dev command lines, and that a job is published to its model's queue."""

import json
import os
import subprocess
import sys
import time

import pytest
import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from generation import worker_registry
from generation.queues import gpu_queue, model_of_queue, worker_models, worker_queue, worker_queues
from workspaces.models import Role

DEMO_KEYS = ["wan22-a14b-demo", "wan22-i2v-a14b-demo", "wan-ti2v-demo", "flux-demo"]


@pytest.fixture(autouse=True)
def models_built(demo_models):
    return demo_models


def test_queue_names_round_trip():
    assert gpu_queue("wan22-t2v-a14b") == "gpu.wan22-t2v-a14b"
    assert model_of_queue("gpu.wan22-t2v-a14b") == "wan22-t2v-a14b"
    assert model_of_queue("default") is None
    assert worker_queues(["flux1-dev", "flux-demo"]) == ["gpu.flux1-dev", "gpu.flux-demo"]
    # A worker's own queue (jobs routed to it) names no model.
    assert worker_queue("gpu-wan@host.lan") == "gpu.w.gpu-wan_host.lan" and model_of_queue("gpu.w.x_y") is None


def test_default_is_every_enabled_model_with_weights(settings):
    settings.LORASITE_WORKER_MODELS = []
    # Only the demo pipelines are built here; the real models have no weights.
    assert worker_models() == DEMO_KEYS


def test_listed_models_in_the_order_given(settings):
    settings.LORASITE_WORKER_MODELS = ["flux-demo", "wan22-a14b-demo", "flux-demo"]
    assert worker_models() == ["flux-demo", "wan22-a14b-demo"]


def test_unknown_or_weightless_models_are_refused_at_start(settings):
    settings.LORASITE_WORKER_MODELS = ["flux-demo", "wan22-t2v-a41b", "flux1-dev"]
    with pytest.raises(ImproperlyConfigured) as error:
        worker_models()
    message = str(error.value)
    assert "'wan22-t2v-a41b' is not an enabled model (known: wan22-t2v-a14b" in message
    assert f"the weights of 'flux1-dev' are not installed at {settings.LORASITE_MODELS_DIR / 'FLUX.1-dev'}" in message


def test_gpu_worker_consumes_exactly_the_listed_models_queues(settings, capsys):
    settings.LORASITE_WORKER_MODELS = ["wan22-a14b-demo", "flux-demo"]
    call_command("gpu_worker", "--dry-run", "--", "-n", "gpu-a@%h", "--loglevel", "INFO")
    argv = capsys.readouterr().out.split()
    assert argv[argv.index("-Q") + 1] == "gpu.wan22-a14b-demo,gpu.flux-demo"
    assert argv[argv.index("-c") + 1] == "1"
    assert argv[-4:] == ["-n", "gpu-a@%h", "--loglevel", "INFO"]


def test_gpu_worker_refuses_an_unknown_model(settings):
    settings.LORASITE_WORKER_MODELS = ["nope"]
    with pytest.raises(CommandError, match="LORASITE_WORKER_MODELS: 'nope' is not an enabled model"):
        call_command("gpu_worker", "--dry-run")


def test_gpu_worker_refuses_to_serve_nothing(settings, tmp_path):
    settings.LORASITE_MODELS_DIR = tmp_path  # no weights anywhere
    settings.LORASITE_WORKER_MODELS = []
    with pytest.raises(CommandError, match="No model to serve"):
        call_command("gpu_worker", "--dry-run")


def test_run_dev_worker_serves_default_and_every_present_model(settings, monkeypatch):
    from workspaces.management.commands import run_dev

    started = {}

    class FinishedProcess:
        """Stands in for the web server and the worker: records the command line, exits at once."""

        def __init__(self, cmd, **kwargs):
            started[cmd[2] if cmd[1] == "manage.py" else "worker"] = cmd

        def poll(self):
            return 0

        def wait(self, timeout):
            return 0

    settings.LORASITE_WORKER_MODELS = []
    monkeypatch.setattr(run_dev.subprocess, "Popen", FinishedProcess)
    call_command("run_dev")
    worker = started["worker"]
    assert worker[worker.index("-Q") + 1] == "default," + ",".join(gpu_queue(key) for key in DEMO_KEYS)


@pytest.mark.django_db
def test_a_job_goes_to_its_models_queue_on_commit(api, workspace, monkeypatch, django_capture_on_commit_callbacks):
    """Spied: with a real broker the e2e worker (when running) would consume the message first."""
    from generation.tasks import generation_run

    sent = []
    monkeypatch.setattr(generation_run, "apply_async", lambda *args, **options: sent.append((args, options)))
    with django_capture_on_commit_callbacks(execute=True):
        body = {"model": "flux-demo", "prompt": "a cat"}
        response = api.post(f"/api/v1/workspaces/{workspace.slug}/generations/", body, format="json")
        assert response.status_code == 201, response.json()
        assert sent == []  # nothing leaves before the transaction commits
    assert sent == [((), {"args": [response.json()["id"]], "queue": "gpu.flux-demo", "priority": None})]


def test_celery_creates_the_model_queue_on_the_real_broker():
    """What `generation_create` does on commit, on the real Redis broker: the message lands in the
    list of its model's queue, with no queue declared in settings."""
    if not settings.USING_REDIS:
        pytest.skip("needs Redis (required, and so never skipped, in CI)")
    from generation.tasks import generation_run

    queue = gpu_queue("probe-model")  # a model no worker serves, so nothing consumes the message
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(queue)
    generation_run.apply_async(args=["00000000-0000-0000-0000-000000000000"], queue=queue)
    assert broker.llen(queue) == 1
    message = json.loads(broker.lpop(queue))
    assert message["headers"]["task"] == "generation.tasks.generation_run"
    assert message["properties"]["delivery_info"]["routing_key"] == queue


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_announces_the_models_of_its_queues(celery_worker, member_of, client_for):
    deadline = time.monotonic() + 30
    while not any(worker.name.startswith("e2e@") for worker in worker_registry.live_workers() or []):
        assert time.monotonic() < deadline, "the worker never announced itself"
        time.sleep(0.25)
    [worker] = [worker for worker in worker_registry.live_workers() if worker.name.startswith("e2e@")]
    assert list(worker.models) == DEMO_KEYS and worker.started <= worker.last_seen
    models = client_for(member_of(Role.MEMBER)).get("/api/v1/models/").json()
    served = {model["key"]: model["served"] for model in models}
    assert {key: served[key] for key in DEMO_KEYS} == dict.fromkeys(DEMO_KEYS, True)
    assert served["wan22-t2v-a14b"] is False


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LORASITE_ROUTING_LOAD_FACTOR", "two", "LORASITE_ROUTING_LOAD_FACTOR must be a number, not 'two'."),
        ("LORASITE_ROUTING_LOAD_FACTOR", "nan", "LORASITE_ROUTING_LOAD_FACTOR must be a number, not 'nan'."),
        ("LORASITE_ROUTING_LOAD_FACTOR", "0.5", "LORASITE_ROUTING_LOAD_FACTOR and LORASITE_ROUTING_BACKLOG_BOUND"),
        ("LORASITE_ROUTING_BACKLOG_BOUND", "6.5", "LORASITE_ROUTING_BACKLOG_BOUND must be a whole number, not '6.5'."),
    ],
)
def test_a_malformed_routing_setting_stops_the_process_naming_it(variable, value, message):
    env = {**os.environ, "DJANGO_DEBUG": "1", "DJANGO_SETTINGS_MODULE": "lorasite.settings", variable: value}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr and message in result.stderr
