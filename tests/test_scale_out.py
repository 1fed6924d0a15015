"""Scale-out, shown with three real Celery GPU-worker processes (separate var and cache dirs, distinct names) on a
redis-server of their own, the test database and the S3 API server: the issue's stream of 60 jobs over 12 LoRAs
with a skewed (Zipf-like) popularity runs without affinity routing, then with it, on fresh LoRAs; with routing every
job succeeds and fewer LoRA downloads and adapter loads happen. Then a worker is SIGKILLed while a job waits in its
own queue: once its heartbeat has vanished, beat moves the job to the shared queue and another worker runs it. Last,
activating a LoRA prefetches it into the disk cache and host tier of the worker it is placed on.

The counts are the workers' own (their heartbeat records: downloads, adapters applied by where they came from).
The test prints where its time went (start, ingest, each stream and the jobs' own phases) for CI's log."""

import random
import statistics
import time

import pytest

from generation import scaleout, services, worker_registry
from generation.models import FINISHED, GenerationJob, JobStatus
from generation.queues import worker_queue
from generation.routing import placement
from loras.models import LoRA, Status
from loras.services import LoRAOptions, lora_ingest_local_file, lora_update
from lorasite.queueing import queue_backlog
from tests.fault_services import (
    RedisServer,
    celery_app_on_broker,
    kill_process_group,
    start_celery_workers,
    wait_until,
    worker_environment,
)
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODEL = "wan-ti2v-demo"
# The smallest job the demo model takes (one step, 5 frames, no classifier-free guidance pass): the test measures
# LoRA traffic, not inference.
PARAMS = {"steps": 1, "num_frames": 5, "guidance": 1.0}
WORKERS = ("scale1", "scale2", "scale3")
LORAS_PER_RUN, JOBS_PER_RUN = 12, 60  # the stream
IN_FLIGHT = 2 * len(WORKERS)  # a steady stream: each worker has about one job waiting behind the one it runs
# Few adapters fit on a "device": without routing every worker cycles through every LoRA.
WORKER_SETTINGS = {
    "LORASITE_WORKER_HEARTBEAT_SECONDS": "1",
    "LORASITE_WORKER_TTL_SECONDS": "3",
    "LORASITE_RESIDENT_ADAPTERS": "2",
    "LORASITE_WORKER_MODELS": MODEL,
    # Three workers share CI's two cores: one torch thread each, or their threads contend (a job then takes ~10x).
    "OMP_NUM_THREADS": "1",
}
# Where the test's time goes, printed at the end: phase -> seconds.
ELAPSED: dict[str, float] = {}


@pytest.fixture
def broker(tmp_path, settings):
    if not settings.USING_POSTGRES:
        pytest.skip("the worker processes need the PostgreSQL test database (required in CI)")
    server = RedisServer(tmp_path)
    server.start()
    settings.CELERY_BROKER_URL = server.url  # the registry reads the broker's Redis
    with celery_app_on_broker(server.url):
        yield server
    server.stop()


@pytest.fixture
def workers(broker, demo_models, tmp_path):
    started = time.monotonic()
    envs = {name: worker_environment(broker.url, tmp_path / f"var-{name}", **WORKER_SETTINGS) for name in WORKERS}
    with start_celery_workers(envs=envs, log_dir=tmp_path) as processes:
        wait_until(lambda: len(live()) == len(WORKERS), timeout=30, what="three workers in the registry")
        ELAPSED["start 3 workers"] = time.monotonic() - started
        yield processes


def live() -> dict[str, worker_registry.LiveWorker]:
    return {worker.name.split("@")[0]: worker for worker in worker_registry.live_workers() or []}


def make_loras(actor, tmp_path, seeds: range) -> list[LoRA]:
    """Ingest one small LoRA per seed through the app (the workers run the ingest tasks side by side)."""
    created = []
    for seed in seeds:
        path = write_lora(tmp_path / f"style_{seed}.safetensors", family="wan-demo", blocks=2, std=0.2, seed=seed)
        lora = lora_ingest_local_file(actor=actor, path=path, filename=path.name, options=LoRAOptions(name=f"s{seed}"))
        created.append(lora)
    ids = [lora.id for lora in created]
    wait_until(
        lambda: not LoRA.objects.filter(id__in=ids, status=Status.PROCESSING).exists(),
        timeout=120,
        what="the workers to ingest the LoRAs",
        interval=0.25,
    )
    assert set(LoRA.objects.filter(id__in=ids).values_list("status", flat=True)) == {Status.READY}
    return created


def zipf_stream(loras: list[LoRA], *, seed: int) -> list[LoRA]:
    weights = [1 / rank for rank in range(1, len(loras) + 1)]
    return random.Random(seed).choices(loras, weights=weights, k=JOBS_PER_RUN)


def counters() -> dict[str, int]:
    totals: dict[str, int] = {}
    for worker in live().values():
        for key, value in worker.counters.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def run_stream(actor, stream: list[LoRA], *, jobs_before: int) -> tuple[list[GenerationJob], dict[str, int]]:
    """Send the stream keeping IN_FLIGHT jobs unfinished; wait until all end and every worker has reported them."""
    ids = []

    def unfinished() -> int:
        return GenerationJob.objects.filter(id__in=ids).exclude(status__in=FINISHED).count()

    for lora in stream:
        wait_until(lambda: unfinished() < IN_FLIGHT, timeout=120, what="room in the stream", interval=0.05)
        job = services.generation_create(
            actor=actor, model=MODEL, prompt="a lighthouse", params=PARAMS, loras=[services.LoRARequest(lora.id)]
        )
        ids.append(job.id)
    wait_until(lambda: unfinished() == 0, timeout=180, what="the stream to finish", interval=0.25)
    # The workers announce their counters right after each job.
    expected = jobs_before + len(stream)
    totals = wait_until(
        lambda: (totals := counters()).get("jobs", 0) >= expected and totals, timeout=15, what="the workers' counts"
    )
    return list(GenerationJob.objects.filter(id__in=ids)), totals


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after.get(key, 0) - before.get(key, 0) for key in after}


def adapter_loads(counts: dict[str, int]) -> int:
    """Adapters that had to be loaded onto the device: from the file or from host memory (not already resident)."""
    return counts.get("adapter_file", 0) + counts.get("adapter_host_tier", 0)


def phases(jobs: list[GenerationJob]) -> str:
    """The median of each phase of the jobs (their timings), for the printed profile."""
    keys = sorted({key for job in jobs for key in job.timings})
    return ", ".join(f"{key} {statistics.median(job.timings.get(key, 0) for job in jobs):.3f}" for key in keys)


def test_routing_keeps_loras_where_they_are_and_a_dead_worker_s_queue_is_re_routed(
    workers, workspace, member_of, tmp_path, settings
):
    actor = workspace.memberships.get(user=member_of(Role.OWNER))
    clock = time.monotonic()
    # Both runs' LoRAs in one batch: the routed run must not find the first run's LoRAs already on the workers.
    loras = make_loras(actor, tmp_path, range(2 * LORAS_PER_RUN))
    without_loras, with_loras = loras[:LORAS_PER_RUN], loras[LORAS_PER_RUN:]
    ELAPSED[f"ingest {len(loras)} LoRAs"], clock = time.monotonic() - clock, time.monotonic()

    settings.LORASITE_ROUTING = False
    start = counters()
    plain_jobs, after_plain = run_stream(actor, zipf_stream(without_loras, seed=1), jobs_before=start.get("jobs", 0))
    ELAPSED[f"{JOBS_PER_RUN} jobs without routing"], clock = time.monotonic() - clock, time.monotonic()
    settings.LORASITE_ROUTING = True
    routed_jobs, after_routed = run_stream(
        actor, zipf_stream(with_loras, seed=1), jobs_before=after_plain.get("jobs", 0)
    )
    ELAPSED[f"{JOBS_PER_RUN} jobs with routing"], clock = time.monotonic() - clock, time.monotonic()

    for job in plain_jobs + routed_jobs:
        assert job.status == JobStatus.SUCCEEDED, job.error
    plain, routed = delta(after_plain, start), delta(after_routed, after_plain)
    print(f"without routing: {plain}\nwith routing:    {routed}")
    print(f"median job phases, s: {phases(plain_jobs + routed_jobs)}")
    assert routed["downloads"] < plain["downloads"]
    assert adapter_loads(routed) < adapter_loads(plain)

    # A job waiting in the own queue of a worker that dies is not lost.
    lora = with_loras[0]
    names = {short: worker.name for short, worker in live().items()}
    settings.LORASITE_ROUTING_K = 1  # the LoRA's one placed worker is the only one the router may pick
    [doomed] = placement(lora.sha256, list(names.values()), k=1)
    kill_process_group(workers[doomed.split("@")[0]])
    job = services.generation_create(
        actor=actor, model=MODEL, prompt="orphan", params=PARAMS, loras=[services.LoRARequest(lora.id)]
    )
    assert queue_backlog(worker_queue(doomed)) == 1  # routed to the worker whose record has not yet expired
    wait_until(lambda: doomed not in {w.name for w in worker_registry.live_workers()}, timeout=10, what="its expiry")
    assert scaleout.jobs_reroute_from_dead_workers() == 1
    assert queue_backlog(worker_queue(doomed)) == 0
    wait_until(lambda: GenerationJob.objects.get(id=job.id).is_finished, timeout=60, what="the re-routed job")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.worker and job.worker != doomed
    ELAPSED["dead worker's job re-routed"], clock = time.monotonic() - clock, time.monotonic()

    # Activating a LoRA prefetches it into the disk cache and the host tier (its pipeline is loaded there) of the
    # worker it is placed on, before any job needs it.
    [fresh] = make_loras(actor, tmp_path, range(200, 201))
    LoRA.objects.filter(id=fresh.id).update(is_active=False)
    fresh.refresh_from_db()
    lora_update(actor=actor, lora=fresh, is_active=True)
    [target] = placement(fresh.sha256, [worker.name for worker in worker_registry.live_workers()], k=1)

    def prefetched() -> bool:
        worker = {w.name: w for w in worker_registry.live_workers()}[target]
        return fresh.sha256 in worker.disk and fresh.sha256 in worker.tier_sets("host_tier").get(MODEL, ())

    wait_until(prefetched, timeout=30, what="the prefetch to reach the worker's disk cache and host tier")
    ELAPSED["prefetch"] = time.monotonic() - clock
    print("time, s: " + ", ".join(f"{what} {seconds:.1f}" for what, seconds in ELAPSED.items()))
