"""Prometheus metrics at `/metrics` (on with LORASITE_METRICS_ENABLED), through the prometheus_client library.

Every value is read at scrape time from what all processes already share, so any web process answers for the
whole deployment and no multiprocess setup is needed: jobs by state and model from the database; the GPU workers'
own counts from their registry records (generation/worker_registry.py) — adapters applied by the tier they came
from, LoRA downloads and bytes, and per-phase duration histograms (queue wait included) that each worker keeps in
`PhaseHistograms` since it started, summed here over the live workers (a restarted worker starts again from zero,
which Prometheus' rate() reads as a counter reset) —; routing decisions, counted by the web processes that send
jobs, in Redis (in this process without Redis); and the number of live workers.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator

import redis
from django.conf import settings
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

logger = logging.getLogger(__name__)

# Seconds: a job phase lasts from milliseconds (an adapter from host memory) to half an hour (a long video).
PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, math.inf)
ROUTING_KEY = "lorasite:metrics:routing"  # Redis hash: routing reason -> decisions
ADAPTER_TIERS = ("resident", "host_tier", "file")  # where an applied adapter came from (worker counters adapter_*)

_local_routing: Counter[str] = Counter()


class PhaseHistograms:
    """Cumulative per-phase duration histograms a worker keeps and reports in its heartbeat record."""

    def __init__(self) -> None:
        self._buckets: dict[str, list[int]] = {}
        self._sums: Counter[str] = Counter()

    def observe(self, timings: dict[str, float]) -> None:
        for phase, seconds in timings.items():
            if not isinstance(seconds, int | float):
                continue
            buckets = self._buckets.setdefault(phase, [0] * len(PHASE_BUCKETS))
            for index, bound in enumerate(PHASE_BUCKETS):
                if seconds <= bound:
                    buckets[index] += 1
            self._sums[phase] += seconds

    def as_record(self) -> dict[str, dict]:
        """{phase: {"buckets": [cumulative count per PHASE_BUCKETS bound], "sum": seconds}}."""
        return {phase: {"buckets": list(counts), "sum": self._sums[phase]} for phase, counts in self._buckets.items()}


def _redis() -> redis.Redis | None:
    from generation.worker_registry import redis_client

    return redis_client()


def count_routing(reason: str) -> None:
    """One routing decision (generation/scaleout.py). Never raises: a metric must not stop a job being sent."""
    client = _redis()
    if client is None:
        _local_routing[reason] += 1
        return
    try:
        client.hincrby(ROUTING_KEY, reason, 1)
    except (redis.RedisError, OSError) as error:
        logger.warning("Routing metric not counted: %s", error)


def _routing_counts() -> dict[str, int]:
    client = _redis()
    if client is None:
        return dict(_local_routing)
    try:
        return {key.decode(): int(value) for key, value in client.hgetall(ROUTING_KEY).items()}
    except (redis.RedisError, OSError):
        return {}


class LorasiteCollector:
    """Reads the metrics at each scrape (see the module docstring)."""

    def collect(self) -> Iterator[Metric]:
        from generation.models import GenerationJob
        from generation.worker_registry import live_workers

        jobs = GaugeMetricFamily("lorasite_jobs", "Generation jobs by state and model.", labels=["state", "model"])
        for row in GenerationJob.objects.values("status", "model_key").annotate(n=Count("id")).order_by():
            jobs.add_metric([row["status"], row["model_key"]], row["n"])
        yield jobs

        routing = CounterMetricFamily(
            "lorasite_routing_decisions", "Where jobs were sent: affinity hits and each fallback.", labels=["reason"]
        )
        for reason, count in sorted(_routing_counts().items()):
            routing.add_metric([reason], count)
        yield routing

        workers = live_workers()
        if workers is None:
            return  # the registry cannot be read: the worker metrics are absent rather than wrong
        yield GaugeMetricFamily("lorasite_gpu_workers", "Live GPU workers (a heartbeat within the TTL).", len(workers))
        totals: Counter[str] = Counter()
        for worker in workers:
            totals.update(worker.counters)
        adapters = CounterMetricFamily(
            "lorasite_adapters_applied",
            "LoRAs applied to a job, by where they came from: resident (a hit), host_tier or file (misses).",
            labels=["tier"],
        )
        for tier in ADAPTER_TIERS:
            adapters.add_metric([tier], totals[f"adapter_{tier}"])
        yield adapters
        yield CounterMetricFamily("lorasite_lora_downloads", "LoRA files fetched to a disk cache.", totals["downloads"])
        downloaded = totals["bytes_downloaded"]
        yield CounterMetricFamily("lorasite_lora_downloaded_bytes", "Bytes of LoRA files fetched.", downloaded)
        yield from self._phases(workers)

    @staticmethod
    def _phases(workers) -> Iterator[Metric]:
        buckets: dict[str, list[int]] = {}
        sums: Counter[str] = Counter()
        for worker in workers:
            for phase, record in worker.histograms.items():
                counts = record.get("buckets", [])
                if len(counts) != len(PHASE_BUCKETS):
                    continue  # a worker built with other buckets: not addable
                total = buckets.setdefault(phase, [0] * len(PHASE_BUCKETS))
                buckets[phase] = [a + b for a, b in zip(total, counts, strict=True)]
                sums[phase] += record.get("sum", 0.0)
        histogram = HistogramMetricFamily(
            "lorasite_job_phase_seconds", "Duration of each job phase (queue_wait included).", labels=["phase"]
        )
        for phase, counts in sorted(buckets.items()):
            labels = ["+Inf" if math.isinf(bound) else str(bound) for bound in PHASE_BUCKETS]
            histogram.add_metric([phase], list(zip(labels, counts, strict=True)), sums[phase])
        yield histogram


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics for Prometheus; 404 unless LORASITE_METRICS_ENABLED (keep it off the public network)."""
    if not settings.LORASITE_METRICS_ENABLED:
        raise Http404("Metrics are off.")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LorasiteCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
