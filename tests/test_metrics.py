"""/metrics (lorasite/metrics.py): off unless LORASITE_METRICS_ENABLED; jobs by state and model, routing decisions,
and the live GPU workers' own counts and phase histograms summed from their registry records."""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from generation import worker_registry
from generation.models import GenerationJob
from lorasite.metrics import PHASE_BUCKETS, PhaseHistograms, count_routing
from tests.workers_fixtures import MODEL


def samples(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_phase_histograms_are_cumulative_per_phase():
    histograms = PhaseHistograms()
    histograms.observe({"inference": 0.3, "download": None})
    histograms.observe({"inference": 7.0})
    record = histograms.as_record()
    assert set(record) == {"inference"} and record["inference"]["sum"] == pytest.approx(7.3)
    counts = dict(zip(PHASE_BUCKETS, record["inference"]["buckets"], strict=True))
    assert (counts[0.25], counts[0.5], counts[5.0], counts[10.0], counts[float("inf")]) == (0, 1, 1, 2, 2)


@pytest.mark.django_db
def test_metrics_are_off_unless_enabled(client, settings):
    settings.LORASITE_METRICS_ENABLED = False
    assert client.get("/metrics").status_code == 404


@pytest.mark.django_db
def test_metrics_read_jobs_routing_and_the_workers_records(client, settings, workspace, tmp_path):
    settings.LORASITE_METRICS_ENABLED = True
    if not settings.USING_REDIS:
        settings.VAR_DIR = tmp_path
    GenerationJob.objects.create(workspace=workspace, model_key=MODEL, model_name="demo", kind="video", prompt="x")
    before = samples(client).get(("lorasite_routing_decisions_total", (("reason", "affinity"),)), 0)
    count_routing("affinity")
    histograms = PhaseHistograms()
    histograms.observe({"queue_wait": 2.0, "inference": 0.4})
    name = f"metrics-{time.monotonic_ns()}@host"
    counters = {"adapter_file": 2, "adapter_resident": 5, "downloads": 2, "bytes_downloaded": 2048, "jobs": 7}
    worker_registry.announce(
        name=name,
        models=[MODEL],
        started=time.time(),
        status={"counters": counters, "histograms": histograms.as_record()},
    )
    try:
        found = samples(client)
    finally:
        worker_registry.withdraw(name=name)
        worker_registry.forget(name=name)
    assert found[("lorasite_jobs", (("model", MODEL), ("state", "queued")))] == 1
    assert found[("lorasite_routing_decisions_total", (("reason", "affinity"),))] == before + 1
    assert found[("lorasite_gpu_workers", ())] >= 1
    assert found[("lorasite_adapters_applied_total", (("tier", "resident"),))] >= 5
    assert found[("lorasite_lora_downloaded_bytes_total", ())] >= 2048
    assert found[("lorasite_job_phase_seconds_count", (("phase", "queue_wait"),))] >= 1
    assert found[("lorasite_job_phase_seconds_bucket", (("le", "2.5"), ("phase", "queue_wait")))] >= 1
