"""The skewed job stream that tests/test_scale_out.py and `python -m bench scale_out` send to real GPU-worker
processes, and the workers' own counts of what it cost them.

The stream is the issue's: jobs with one LoRA each, drawn with a Zipf-like popularity (the r-th most popular LoRA
weighs 1/r), sent as a steady stream that keeps a fixed number of jobs unfinished. The counts come from the workers'
heartbeat records (generation/worker_registry.py): jobs, downloads, and each adapter applied by where it came from
(`adapter_file`, `adapter_host_tier`, `adapter_resident`); records are keyed by the worker's short name (before `@`).
"""

from __future__ import annotations

import random
from pathlib import Path

from generation import services, worker_registry
from generation.models import FINISHED, GenerationJob
from loras.models import LoRA, Status
from loras.services import LoRAOptions, lora_ingest_local_file
from tests.fault_services import wait_until
from tests.lora_files import write_lora
from workspaces.models import Membership

Counts = dict[str, int]

MODEL = "wan-ti2v-demo"
STREAM_LORAS, STREAM_JOBS = 12, 60  # the stream
# The smallest job the demo model takes (one step, 5 frames, no classifier-free guidance pass): what is measured is
# LoRA traffic, not inference.
PARAMS = {"steps": 1, "num_frames": 5, "guidance": 1.0}
# Environment of each worker process (besides its database, broker, storage and var dir).
WORKER_SETTINGS = {
    "LORASITE_WORKER_HEARTBEAT_SECONDS": "1",
    "LORASITE_WORKER_TTL_SECONDS": "3",
    # Few adapters fit on the "device" (a GPU where only a few fit beside the model): without routing every worker
    # cycles through every LoRA.
    "LORASITE_RESIDENT_ADAPTERS": "2",
    "LORASITE_WORKER_MODELS": MODEL,
    # Several workers share a CI machine's two cores: one torch thread each, or their threads contend (a job then
    # takes ~10x).
    "OMP_NUM_THREADS": "1",
}


def live() -> dict[str, worker_registry.LiveWorker]:
    """The live workers by short name."""
    return {worker.name.split("@")[0]: worker for worker in worker_registry.live_workers() or []}


def make_loras(actor: Membership, folder: Path, seeds: range) -> list[LoRA]:
    """Ingest one small LoRA per seed through the app (the workers run the ingest tasks side by side); all ready."""
    created = []
    for seed in seeds:
        path = write_lora(folder / f"style_{seed}.safetensors", family="wan-demo", blocks=2, std=0.2, seed=seed)
        lora = lora_ingest_local_file(actor=actor, path=path, filename=path.name, options=LoRAOptions(name=f"s{seed}"))
        created.append(lora)
    ids = [lora.id for lora in created]
    wait_until(
        lambda: not LoRA.objects.filter(id__in=ids, status=Status.PROCESSING).exists(),
        timeout=120,
        what="the workers to ingest the LoRAs",
        interval=0.25,
    )
    statuses = set(LoRA.objects.filter(id__in=ids).values_list("status", flat=True))
    assert statuses == {Status.READY}, f"LoRAs not all ready after ingest: {statuses}"
    return created


def zipf_stream(loras: list[LoRA], *, jobs: int, seed: int) -> list[LoRA]:
    """`jobs` draws from `loras`, the first the most popular."""
    weights = [1 / rank for rank in range(1, len(loras) + 1)]
    return random.Random(seed).choices(loras, weights=weights, k=jobs)


def worker_counts() -> dict[str, Counts]:
    """Each live worker's counters since it started."""
    return {name: dict(worker.counters) for name, worker in live().items()}


def total(per_worker: dict[str, Counts]) -> Counts:
    totals: Counts = {}
    for counts in per_worker.values():
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def delta(after: Counts, before: Counts) -> Counts:
    return {key: after.get(key, 0) - before.get(key, 0) for key in after}


def adapter_loads(counts: Counts) -> int:
    """Adapters that had to be loaded onto the device: from the file or from host memory (not already resident)."""
    return counts.get("adapter_file", 0) + counts.get("adapter_host_tier", 0)


def run_stream(
    actor: Membership, stream: list[LoRA], *, model: str, params: dict, in_flight: int, jobs_before: int
) -> tuple[list[GenerationJob], dict[str, Counts]]:
    """Send the stream keeping `in_flight` jobs unfinished; wait until all end and every worker has reported them
    (`jobs_before`: the workers' job count before). Returns the jobs and each worker's counters after."""
    ids = []

    def unfinished() -> int:
        return GenerationJob.objects.filter(id__in=ids).exclude(status__in=FINISHED).count()

    for lora in stream:
        wait_until(lambda: unfinished() < in_flight, timeout=120, what="room in the stream", interval=0.05)
        job = services.generation_create(
            actor=actor, model=model, prompt="a lighthouse", params=params, loras=[services.LoRARequest(lora.id)]
        )
        ids.append(job.id)
    wait_until(lambda: unfinished() == 0, timeout=300, what="the stream to finish", interval=0.25)
    # The workers announce their counters right after each job.
    expected = jobs_before + len(stream)
    per_worker = wait_until(
        lambda: (counts := worker_counts()) and total(counts).get("jobs", 0) >= expected and counts,
        timeout=15,
        what="the workers' counts",
    )
    return list(GenerationJob.objects.filter(id__in=ids)), per_worker
