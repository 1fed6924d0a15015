"""Sweeps and A/B tests with the job queue (a redis-server of the test's own) really down: a JSON 503 naming it,
quickly, with no experiment and no job left; once it is back the same request starts the experiment and every job
reaches the broker."""

import time

import pytest

from generation.models import ABTest, GenerationJob, Sweep
from tests.factories import LoRAFactory
from tests.test_faults_broker import broker  # noqa: F401  (a fixture: this test's own redis-server)

WAN = "wan22-a14b-demo"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("demo_models")
def test_a_stopped_broker_refuses_experiments_whole_and_a_restarted_one_takes_every_job(broker, api, workspace):  # noqa: F811
    v1 = LoRAFactory(workspace=workspace, name="anime", version="1", base_model="wan-demo")
    v2 = LoRAFactory(workspace=workspace, name="anime", version="2", base_model="wan-demo")
    base = f"/api/v1/workspaces/{workspace.slug}"
    params = {"steps": 2, "seed": 7, "width": 32, "height": 32, "num_frames": 5}
    sweep = {"model": WAN, "prompt": "a lighthouse", "params": params, "x_axis": {"kind": "weight", "lora_id": v1.id}}
    sweep["loras"] = [{"lora_id": v1.id}]
    abtest = {
        "model": WAN,
        "prompts": ["a lighthouse"],
        "seeds": [1, 2],
        "params": {"steps": 2},
        "stack_a": {"loras": [{"lora_id": v1.id}]},
        "stack_b": {"loras": [{"lora_id": v2.id}]},
    }
    broker.stop()
    for url, body, what in ((f"{base}/sweeps/", sweep, "sweep"), (f"{base}/abtests/", abtest, "A/B test")):
        started = time.monotonic()
        response = api.post(url, body, format="json")
        assert time.monotonic() - started < 30  # the request does not hang on the missing broker
        assert response.status_code == 503 and response["Content-Type"] == "application/json"
        assert response.json()["service"] == "job queue" and f"no {what} was started" in response.json()["message"]
    assert not Sweep.objects.exists() and not ABTest.objects.exists() and not GenerationJob.objects.exists()

    broker.start()
    assert api.post(f"{base}/sweeps/", sweep, format="json").status_code == 201
    assert api.post(f"{base}/abtests/", abtest, format="json").status_code == 201
    jobs = GenerationJob.objects.all()
    assert jobs.count() == 7 + 4 and not jobs.filter(enqueued_at__isnull=True).exists()  # every message sent
