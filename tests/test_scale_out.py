"""Scale-out, shown with three real Celery GPU-worker processes (separate var and cache dirs, distinct names) on a
redis-server of their own, the test database and the S3 API server: the issue's stream of 60 jobs over 12 LoRAs
with a skewed (Zipf-like) popularity runs without affinity routing, then with it, on fresh LoRAs; with routing every
job succeeds and fewer LoRA downloads and adapter loads happen. Then a worker is SIGKILLed while a job waits in its
own queue: once its heartbeat has vanished, beat moves the job to the shared queue and another worker runs it. Last,
activating a LoRA prefetches it into the disk cache and host tier of the worker it is placed on.

The counts are the workers' own (their heartbeat records: downloads, adapters applied by where they came from).
The test prints where its time went (start, ingest, each stream and the jobs' own phases) for CI's log."""

import statistics
import time

import pytest

from generation import scaleout, services, worker_registry
from generation.models import GenerationJob, JobStatus
from generation.queues import worker_queue
from generation.routing import placement
from loras.models import LoRA
from loras.services import lora_update
from lorasite.queueing import queue_backlog
from tests.fault_services import (
    RedisServer,
    celery_app_on_broker,
    kill_process_group,
    start_celery_workers,
    wait_until,
    worker_environment,
)
from tests.scale_out_stream import (
    MODEL,
    PARAMS,
    STREAM_JOBS,
    STREAM_LORAS,
    WORKER_SETTINGS,
    adapter_loads,
    delta,
    live,
    make_loras,
    run_stream,
    total,
    worker_counts,
    zipf_stream,
)
from workspaces.models import Role

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WORKERS = ("scale1", "scale2", "scale3")
IN_FLIGHT = 2 * len(WORKERS)  # a steady stream: each worker has about one job waiting behind the one it runs
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
    loras = make_loras(actor, tmp_path, range(2 * STREAM_LORAS))
    without_loras, with_loras = loras[:STREAM_LORAS], loras[STREAM_LORAS:]
    ELAPSED[f"ingest {len(loras)} LoRAs"], clock = time.monotonic() - clock, time.monotonic()

    def stream(loras: list[LoRA], *, routing: bool, before: dict) -> tuple[list[GenerationJob], dict]:
        settings.LORASITE_ROUTING = routing
        jobs, after = run_stream(
            actor,
            zipf_stream(loras, jobs=STREAM_JOBS, seed=1),
            model=MODEL,
            params=PARAMS,
            in_flight=IN_FLIGHT,
            jobs_before=before.get("jobs", 0),
        )
        return jobs, total(after)

    start = total(worker_counts())
    plain_jobs, after_plain = stream(without_loras, routing=False, before=start)
    ELAPSED[f"{STREAM_JOBS} jobs without routing"], clock = time.monotonic() - clock, time.monotonic()
    routed_jobs, after_routed = stream(with_loras, routing=True, before=after_plain)
    ELAPSED[f"{STREAM_JOBS} jobs with routing"], clock = time.monotonic() - clock, time.monotonic()

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
