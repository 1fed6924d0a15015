"""The router (generation/routing.py): a pure function of a job and a registry snapshot, tested on made-up ones."""

from collections import Counter

from generation.queues import worker_queue
from generation.routing import JobRequest, Reason, WorkerView, backlog_cap, placement, rendezvous_weight, route

MODEL = "wan-ti2v-demo"
SHARED = f"gpu.{MODEL}"
A, B, C = (f"{n:064x}" for n in (10, 11, 12))
W = ["w1@host", "w2@host", "w3@host"]


def worker(name: str, **fields) -> WorkerView:
    return WorkerView(name=name, models=frozenset(fields.pop("models", [MODEL])), **fields)


def job(*loras: str, model: str = MODEL) -> JobRequest:
    return JobRequest(model_key=model, loras=loras)


def decide(request: JobRequest, workers: list[WorkerView], *, k: int = 3, load_factor: float = 2.0, bound: int = 100):
    return route(request, workers, k=k, load_factor=load_factor, backlog_bound=bound)


def test_rendezvous_weights_are_stable_and_a_placement_moves_only_with_its_workers():
    assert rendezvous_weight(A, "w1@host") == rendezvous_weight(A, "w1@host") != rendezvous_weight(A, "w2@host")
    loras = [f"{n:064x}" for n in range(200)]
    before = {lora: placement(lora, W, k=2) for lora in loras}
    after = {lora: placement(lora, [*W, "w4@host"], k=2) for lora in loras}
    # Adding a worker only moves LoRAs onto it; every other LoRA keeps its workers.
    for lora in loras:
        assert set(after[lora]) - {"w4@host"} <= set(before[lora])
        if "w4@host" not in after[lora]:
            assert after[lora] == before[lora]
    # And it takes about its share (1/4 of the placements), not all or none.
    assert 0.15 < sum("w4@host" in workers for workers in after.values()) / len(loras) / 2 < 0.35


def test_tiers_rank_merged_over_resident_over_host_memory_over_disk_over_nothing():
    merged = worker(W[0], merged={MODEL: frozenset({A})})
    resident = worker(W[1], resident={MODEL: frozenset({A})})
    host = worker(W[2], host_tier={MODEL: frozenset({A})})
    disk = worker("w4@host", disk=frozenset({A}))
    empty = worker("w5@host")
    everyone = [empty, disk, host, resident, merged]
    for expected in everyone[::-1]:
        decision = decide(job(A), everyone, k=5)
        assert decision.worker == expected.name and decision.reason == Reason.AFFINITY
        assert decision.queue == worker_queue(expected.name)
        everyone.remove(expected)
        if len(everyone) == 1:
            break
    assert decide(job(A), [empty], k=5).reason == Reason.PLACED


def test_a_merged_set_counts_only_for_the_same_set():
    merged_ab = worker(W[0], merged={MODEL: frozenset({A, B})})
    resident_a = worker(W[1], resident={MODEL: frozenset({A})})
    assert decide(job(A, B), [merged_ab, resident_a]).worker == W[0]
    assert decide(job(A), [merged_ab, resident_a]).worker == W[1]


def test_residency_is_per_model():
    other_model = worker(W[0], models=[MODEL, "flux-demo"], resident={"flux-demo": frozenset({A})})
    on_disk = worker(W[1], disk=frozenset({A}))
    assert decide(job(A), [other_model, on_disk]).worker == W[1]


def test_only_workers_serving_the_model_are_candidates():
    assert decide(job(A), [worker(W[0], models=["flux-demo"], disk=frozenset({A}))]).reason == Reason.NO_WORKER
    assert decide(job(A), []).queue == SHARED


def test_a_job_without_loras_takes_the_shared_queue():
    decision = decide(job(), [worker(W[0])])
    assert decision.queue == SHARED and decision.worker is None and decision.reason == Reason.NO_LORA


def test_the_backlog_cap_is_the_load_factor_times_the_mean_backlog_with_the_new_job_up_to_the_bound():
    def cap(backlogs: list[int], load_factor: float, bound: int = 100) -> int:
        snapshot = [worker(f"w{n}@host", backlog=backlog) for n, backlog in enumerate(backlogs)]
        return backlog_cap(snapshot, load_factor=load_factor, backlog_bound=bound)

    assert cap([0, 0, 0], 2.0) == 1  # idle: one job each
    assert cap([3, 0, 0], 2.0) == 2  # rounded down
    assert cap([1, 1, 0], 2.5) == 2  # light load: one job waiting at most while a worker idles
    assert cap([6, 6], 1.5) == 9
    assert cap([6, 6], 1.5, bound=6) == 6  # however deep the queues, no job waits behind more than the bound
    assert cap([6], 1.0) == 7  # a lone worker is only ever full at the bound


def test_a_worker_at_the_cap_passes_the_job_to_the_lora_s_other_worker_then_to_the_shared_queue():
    first, second = placement(A, W, k=2)
    [outside] = [name for name in W if name not in (first, second)]
    busy = worker(first, backlog=3, resident={MODEL: frozenset({A})})
    idle_outside = worker(outside)
    # The mean backlog with the new job is (3 + 1 + 0 + 1) / 3: the cap is 4 at factor 2.5, 2 at factor 1.5.
    snapshot = [busy, worker(second, backlog=1), idle_outside]
    assert decide(job(A), snapshot, k=2, load_factor=2.5).worker == first  # resident wins under the cap
    assert decide(job(A), snapshot, k=2, load_factor=1.5).worker == second  # full: A's other worker, not outside
    # Both of A's workers full (the cap is 2): the shared queue, which the idle worker takes from.
    decision = decide(job(A), [busy, worker(second, backlog=3), idle_outside], k=2, load_factor=1.0)
    assert decision.queue == SHARED and decision.worker is None and decision.reason == Reason.BACKLOG
    # The bound caps the wait whatever the mean: at 3 the resident worker is full.
    assert decide(job(A), snapshot, k=2, load_factor=2.5, bound=3).worker == second


def test_a_loaded_pipeline_comes_first_and_the_backlog_beats_a_copy_not_on_the_device():
    loaded = worker(W[0], backlog=2, pipelines=frozenset({MODEL}))
    idle = worker(W[1], backlog=0)
    assert decide(job(A), [loaded, idle], load_factor=3.0).worker == W[0]
    # On disk or in host memory the adapter must be loaded either way: the shorter backlog wins ...
    near = worker(W[0], backlog=2, pipelines=frozenset({MODEL}), host_tier={MODEL: frozenset({A})})
    assert decide(job(A), [near, worker(W[1], pipelines=frozenset({MODEL}))], load_factor=3.0).worker == W[1]
    # ... and breaks a tie of backlogs; on the device it saves the load, and waits behind the backlog instead.
    near_idle = worker(W[0], pipelines=frozenset({MODEL}), disk=frozenset({A}))
    assert decide(job(A), [near_idle, worker(W[1], pipelines=frozenset({MODEL}))]).worker == W[0]
    resident = worker(W[0], backlog=2, pipelines=frozenset({MODEL}), resident={MODEL: frozenset({A})})
    assert decide(job(A), [resident, worker(W[1], pipelines=frozenset({MODEL}))], load_factor=3.0).worker == W[0]


def test_a_lora_goes_only_to_its_k_workers_even_where_it_sits_elsewhere():
    [mine] = placement(A, W, k=1)
    others = [name for name in W if name != mine]
    snapshot = [worker(name, resident={MODEL: frozenset({A})} if name in others else {}) for name in W]
    decision = decide(job(A), snapshot, k=1)
    assert decision.worker == mine and decision.reason == Reason.PLACED


def test_a_popular_lora_spreads_over_its_k_workers_by_backlog():
    """Resident on both of its workers: each new job goes to the one with the shorter backlog."""
    pair = placement(A, W, k=2)
    backlog = Counter()
    for _ in range(20):
        snapshot = [worker(name, backlog=backlog[name], resident={MODEL: frozenset({A})}) for name in W]
        chosen = decide(job(A), snapshot, k=2, load_factor=100).worker
        backlog[chosen] += 1
    assert set(backlog) == set(pair) and abs(backlog[pair[0]] - backlog[pair[1]]) <= 1


def test_a_job_with_several_loras_prefers_the_worker_holding_most_of_them():
    rich = worker(W[0], resident={MODEL: frozenset({A, B})})
    poor = worker(W[1], resident={MODEL: frozenset({C})})
    assert decide(job(A, B, C), [rich, poor]).worker == W[0]
