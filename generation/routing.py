"""Which queue a generation job goes to: a pure function of the job and a snapshot of the live workers.

Each LoRA is placed on at most `k` of the workers serving the job's model, chosen by rendezvous (highest random
weight) hashing of the LoRA's sha256 with each worker's name: every web process picks the same k without talking
to the others, and a worker joining or leaving moves only the LoRAs it is among the k of.

A job may go to any of its LoRAs' workers whose backlog (jobs waiting in its own queue plus the one it runs) is under
the cap of consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018): `load_factor` times
the mean backlog of the model's workers, counting the job being routed, and at most `backlog_bound`, which keeps a
job from waiting behind more than that many for the sake of an adapter on the device. Among those it goes to the
one with the model's pipeline loaded, then where its LoRAs are on the device (their merged set > each adapter
resident), then the shorter backlog, then where they are nearest otherwise (in host memory > in the disk cache),
then the one its first LoRA's hashing ranks first. The winner's own queue (`gpu.w.<name>`) gets the job; when
every one of them is at the cap, the model's shared queue, which every worker serving the model consumes.

Why this order (bench/scale_out.py measures it): an adapter on the device saves its load, so the job waits behind
that worker's backlog up to the cap; one only on disk or in host memory must be loaded anyway, so the shorter
backlog wins, and a popular LoRA ends up resident on both of its workers, which then share its jobs. A LoRA's jobs
go to the shared queue only when all its workers are full: a job taken from there by any worker evicts that
worker's adapters. The cap is relative, so it holds at any depth of queue: a worker takes at most `load_factor`
times its share of the waiting jobs (and never more than `backlog_bound`), and a rare LoRA only ever evicts
adapters on its k workers.

Nothing here reads the broker, the registry or the database (generation/scaleout.py builds the snapshot and sends
the job), so the decisions are unit-tested on made-up snapshots.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from generation.queues import gpu_queue, worker_queue

# Points per LoRA of the job, by where it already is on a worker: on the device (no load) ...
DEVICE_SCORES = {"merged": 2, "resident": 1}
# ... or nearer than the LoRA's file in storage (a load, but no download).
NEAR_SCORES = {"host_tier": 2, "disk": 1}


class Reason:
    """Why a job went where it went (also the label of the routing metric)."""

    AFFINITY = "affinity"  # to a worker already holding some of its LoRAs
    PLACED = "placed"  # to the LoRAs' rendezvous worker, which holds none of them yet
    BACKLOG = "backlog"  # every worker its LoRAs are placed on is at the backlog cap: the shared queue
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


def backlog_cap(snapshot: Sequence[WorkerView], *, load_factor: float, backlog_bound: int) -> int:
    """The backlog at which a worker takes no more routed jobs: `load_factor` times the mean backlog of the
    `snapshot`'s workers once the job being routed is added, rounded down (under light load a job then waits
    behind one other at most while a worker idles) but at least 1, and never over `backlog_bound`."""
    mean = (sum(worker.backlog for worker in snapshot) + 1) / len(snapshot)
    return min(max(math.floor(load_factor * mean), 1), backlog_bound)


def route(job: JobRequest, snapshot: Sequence[WorkerView], *, k: int, load_factor: float, backlog_bound: int) -> Route:
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
    cap = backlog_cap(candidates, load_factor=load_factor, backlog_bound=backlog_bound)

    def tiers(worker: WorkerView) -> list[str]:
        mine = [lora for lora in loras if worker.name in placed[lora]]
        found = [tier_of(worker, model_key=job.model_key, lora=lora, job_loras=job_loras) for lora in mine]
        return [tier for tier in found if tier]

    def score(worker: WorkerView) -> tuple[bool, int, int, int, int, int]:
        held = tiers(worker)
        return (
            job.model_key in worker.pipelines,
            sum(DEVICE_SCORES.get(tier, 0) for tier in held),
            -worker.backlog,
            sum(NEAR_SCORES.get(tier, 0) for tier in held),
            sum(worker.name in workers for workers in placed.values()),
            rendezvous_weight(loras[0], worker.name),  # a stable last word between equals
        )

    open_workers = [
        worker
        for worker in candidates
        if worker.backlog < cap and any(worker.name in workers for workers in placed.values())
    ]
    if not open_workers:
        return Route(shared, None, Reason.BACKLOG)
    best = max(open_workers, key=score)
    return Route(worker_queue(best.name), best.name, Reason.AFFINITY if tiers(best) else Reason.PLACED)
