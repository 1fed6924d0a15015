"""Which queue a generation job goes to: a pure function of the job and a snapshot of the live workers.

Each LoRA is placed on at most `k` of the workers serving the job's model, chosen by rendezvous (highest random
weight) hashing of the LoRA's sha256 with each worker's name: every web process picks the same k without talking
to the others, and a worker joining or leaving moves only the LoRAs it is among the k of. Among the workers the
job's LoRAs are placed on, the one where they already are wins — their merged set on the device > each adapter
resident on the device > in host memory > in the disk cache > nowhere — then the one with the model's pipeline
loaded, then the shorter backlog. The winner's own queue (`gpu.w.<name>`) gets the job, unless its backlog has
reached `backlog_bound`: then the model's shared queue, which every worker serving the model consumes.

A popular LoRA thus spreads over k workers instead of pulling every job to one, and a rare one only ever evicts
adapters on its k workers. Nothing here reads the broker, the registry or the database (generation/scaleout.py
builds the snapshot and sends the job), so the decisions are unit-tested on made-up snapshots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from generation.queues import gpu_queue, worker_queue

# Points per LoRA of the job, by where it already is on a worker.
TIER_SCORES = {"merged": 4, "resident": 3, "host_tier": 2, "disk": 1}


class Reason:
    """Why a job went where it went (also the label of the routing metric)."""

    AFFINITY = "affinity"  # to a worker already holding some of its LoRAs
    PLACED = "placed"  # to the LoRAs' rendezvous worker, which holds none of them yet
    BACKLOG = "backlog"  # the best worker's backlog reached the bound: the shared queue
    NO_LORA = "no_lora"  # nothing to keep close: the shared queue
    NO_WORKER = "no_worker"  # no live worker serves the model: the shared queue, where the job waits for one
    OFF = "off"  # routing is turned off (LORASITE_ROUTING=0): the shared queue


@dataclass(frozen=True)
class JobRequest:
    model_key: str
    loras: tuple[str, ...]  # the sha256 of each LoRA of the job


@dataclass(frozen=True)
class WorkerView:
    """What the router needs to know of one live worker (generation/scaleout.py makes it from its heartbeat)."""

    name: str
    models: frozenset[str]
    backlog: int = 0  # jobs waiting in its own queue, plus the one it is running
    pipelines: frozenset[str] = frozenset()  # models whose pipeline is loaded
    merged: Mapping[str, frozenset[str]] = field(default_factory=dict)  # model -> sha256s merged into its weights
    resident: Mapping[str, frozenset[str]] = field(default_factory=dict)  # model -> sha256s loaded on the device
    host_tier: Mapping[str, frozenset[str]] = field(default_factory=dict)  # model -> sha256s kept in host memory
    disk: frozenset[str] = frozenset()  # sha256s in its disk cache


@dataclass(frozen=True)
class Route:
    queue: str
    worker: str | None  # the worker whose own queue it is; None for the shared queue
    reason: str


def rendezvous_weight(lora: str, worker: str) -> int:
    """The worker's weight for the LoRA: stable across processes and restarts (not Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(f"{lora}\0{worker}".encode(), digest_size=8).digest(), "big")


def placement(lora: str, workers: Sequence[str], *, k: int) -> list[str]:
    """The (at most) k workers the LoRA is placed on, best first."""
    return sorted(workers, key=lambda worker: rendezvous_weight(lora, worker), reverse=True)[: max(k, 1)]


def tier_of(worker: WorkerView, *, model_key: str, lora: str, job_loras: frozenset[str]) -> str | None:
    """Where the LoRA already is on the worker for this model, or None."""
    merged = worker.merged.get(model_key, frozenset())
    if merged and merged == job_loras:
        return "merged"
    if lora in worker.resident.get(model_key, frozenset()):
        return "resident"
    if lora in worker.host_tier.get(model_key, frozenset()):
        return "host_tier"
    if lora in worker.disk:
        return "disk"
    return None


def route(job: JobRequest, snapshot: Sequence[WorkerView], *, k: int, backlog_bound: int) -> Route:
    """The queue for `job` given the live workers in `snapshot` (see the module docstring)."""
    shared = gpu_queue(job.model_key)
    candidates = [worker for worker in snapshot if job.model_key in worker.models]
    if not candidates:
        return Route(shared, None, Reason.NO_WORKER)
    loras = tuple(dict.fromkeys(job.loras))
    if not loras:
        return Route(shared, None, Reason.NO_LORA)
    names = [worker.name for worker in candidates]
    placed = {lora: set(placement(lora, names, k=k)) for lora in loras}
    job_loras = frozenset(loras)

    def score(worker: WorkerView) -> tuple[int, int, bool, int, int]:
        mine = [lora for lora in loras if worker.name in placed[lora]]
        tiers = [tier_of(worker, model_key=job.model_key, lora=lora, job_loras=job_loras) for lora in mine]
        return (
            sum(TIER_SCORES[tier] for tier in tiers if tier),
            len(mine),
            job.model_key in worker.pipelines,
            -worker.backlog,
            rendezvous_weight(loras[0], worker.name),  # a stable last word between equals
        )

    eligible = [worker for worker in candidates if any(worker.name in workers for workers in placed.values())]
    best = max(eligible, key=score)
    if best.backlog >= backlog_bound:
        return Route(shared, None, Reason.BACKLOG)
    return Route(worker_queue(best.name), best.name, Reason.AFFINITY if score(best)[0] else Reason.PLACED)
