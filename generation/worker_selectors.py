"""Reads about the GPU workers for people: the operator page and `GET /api/v1/workers/` (staff), and where a LoRA
already is for the LoRA page ("resident on w1, on disk at w2"). Everything comes from the worker registry's live
records (generation/worker_registry.py) plus the broker's queue lengths; None when the registry cannot be read."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from generation import worker_registry
from generation.model_registry import model_registry
from generation.queues import gpu_queue
from generation.scaleout import worker_backlog
from loras.models import LoRA
from lorasite.queueing import queue_backlog

# Where a LoRA can be on a worker, best first, with the words the pages use.
TIER_LABELS = {
    "merged": "merged on",
    "resident": "resident on",
    "host_tier": "in host memory on",
    "disk": "on disk at",
}


@dataclass(frozen=True)
class AdapterRow:
    model_key: str
    tier: str  # merged | resident | host_tier
    sha256: str
    name: str  # a LoRA with this content ("" when none is left in any workspace)


@dataclass(frozen=True)
class WorkerRow:
    name: str
    queue: str
    models: list[str]
    state: str  # running | idle
    current_job: str
    backlog: int | None  # jobs waiting in its own queue plus the one running; None when the broker does not answer
    device: str
    free_memory_bytes: int | None
    total_memory_bytes: int | None
    pipelines: list[str]
    adapters: list[AdapterRow]
    disk_count: int
    cache_bytes: int
    cache_max_bytes: int
    counters: dict[str, int]
    started: float
    last_seen: float

    @property
    def cache_fill(self) -> float:
        return self.cache_bytes / self.cache_max_bytes if self.cache_max_bytes else 0.0


@dataclass(frozen=True)
class WorkersOverview:
    workers: list[WorkerRow]
    queues: dict[str, int | None]  # shared queue length per model a live worker serves (None: no answer)
    routing: bool
    k: int
    load_factor: float
    backlog_bound: int


def _lora_names(shas: set[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for sha256, name in LoRA.objects.alive().filter(sha256__in=shas).order_by("id").values_list("sha256", "name"):
        names.setdefault(sha256, name)
    return names


def workers_overview() -> WorkersOverview | None:
    """Every live GPU worker with what it holds and its backlog, and each served model's shared queue length."""
    workers = worker_registry.live_workers()
    if workers is None:
        return None
    shas = {
        sha256 for worker in workers for tiers in worker.adapters.values() for shas in tiers.values() for sha256 in shas
    }
    names = _lora_names(shas)
    rows = []
    for worker in workers:
        adapters = [
            AdapterRow(model_key=model_key, tier=tier, sha256=sha256, name=names.get(sha256, ""))
            for model_key, tiers in sorted(worker.adapters.items())
            for tier in ("merged", "resident", "host_tier")
            for sha256 in tiers.get(tier, [])
        ]
        rows.append(
            WorkerRow(
                name=worker.name,
                queue=worker.queue,
                models=list(worker.models),
                state="running" if worker.current_job else "idle",
                current_job=worker.current_job,
                backlog=worker_backlog(worker),
                device=worker.device,
                free_memory_bytes=worker.free_memory_bytes,
                total_memory_bytes=worker.total_memory_bytes,
                pipelines=list(worker.pipelines),
                adapters=adapters,
                disk_count=worker.disk_count,
                cache_bytes=worker.cache_bytes,
                cache_max_bytes=worker.cache_max_bytes,
                counters=dict(worker.counters),
                started=worker.started,
                last_seen=worker.last_seen,
            )
        )
    served = sorted({key for worker in workers for key in worker.models})
    return WorkersOverview(
        workers=rows,
        queues={key: queue_backlog(gpu_queue(key)) for key in served},
        routing=settings.LORASITE_ROUTING,
        k=settings.LORASITE_ROUTING_K,
        load_factor=settings.LORASITE_ROUTING_LOAD_FACTOR,
        backlog_bound=settings.LORASITE_ROUTING_BACKLOG_BOUND,
    )


@dataclass(frozen=True)
class LoRAPlace:
    worker: str
    tier: str

    @property
    def label(self) -> str:
        return f"{TIER_LABELS[self.tier]} {self.worker.split('@')[0]}"


@dataclass(frozen=True)
class ModelWhere:
    model_key: str
    display_name: str
    served: bool
    places: list[LoRAPlace]  # best tier first

    @property
    def text(self) -> str:
        """'resident on w1, on disk at w2'."""
        return ", ".join(place.label for place in self.places)


def _best_tier(worker: worker_registry.LiveWorker, *, model_key: str, sha256: str) -> str | None:
    tiers = worker.adapters.get(model_key, {})
    for tier in ("merged", "resident", "host_tier"):
        if sha256 in tiers.get(tier, ()):
            return tier
    return "disk" if sha256 in worker.disk else None


def lora_whereabouts(*, lora: LoRA, model_keys: list[str]) -> list[ModelWhere] | None:
    """For each of `model_keys` (the models the LoRA fits): whether a live worker serves it and on which workers
    the LoRA already is, best tier first; None when the registry cannot be read."""
    workers = worker_registry.live_workers()
    if workers is None:
        return None
    registry = model_registry()
    answer = []
    for key in model_keys:
        serving = [worker for worker in workers if key in worker.models]
        places = [
            LoRAPlace(worker=worker.name, tier=tier)
            for worker in serving
            if lora.sha256 and (tier := _best_tier(worker, model_key=key, sha256=lora.sha256))
        ]
        places.sort(key=lambda place: list(TIER_LABELS).index(place.tier))
        answer.append(
            ModelWhere(model_key=key, display_name=registry[key].display_name, served=bool(serving), places=places)
        )
    return answer
