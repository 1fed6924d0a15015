"""The router (generation/routing.py): a pure function of a job and a registry snapshot, tested on made-up ones."""

from collections import Counter

from generation.queues import worker_queue
from generation.routing import JobRequest, Reason, WorkerView, placement, rendezvous_weight, route

MODEL = "wan-ti2v-demo"
SHARED = f"gpu.{MODEL}"
A, B, C = (f"{n:064x}" for n in (10, 11, 12))
W = ["w1@host", "w2@host", "w3@host"]


def worker(name: str, **fields) -> WorkerView:
    return WorkerView(name=name, models=frozenset(fields.pop("models", [MODEL])), **fields)


def job(*loras: str, model: str = MODEL) -> JobRequest:
    return JobRequest(model_key=model, loras=loras)


def decide(request: JobRequest, workers: list[WorkerView], *, k: int = 3, bound: int = 4):
    return route(request, workers, k=k, backlog_bound=bound)


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


def test_the_best_worker_over_its_backlog_bound_sends_the_job_to_the_shared_queue():
    busy = worker(W[0], backlog=4, resident={MODEL: frozenset({A})})
    idle = worker(W[1])
    decision = decide(job(A), [busy, idle], bound=4)
    assert decision.queue == SHARED and decision.reason == Reason.BACKLOG
    assert decide(job(A), [busy, idle], bound=5).worker == W[0]


def test_equal_workers_are_told_apart_by_the_loaded_pipeline_then_the_backlog():
    loaded = worker(W[0], backlog=2, pipelines=frozenset({MODEL}))
    idle = worker(W[1], backlog=0)
    assert decide(job(A), [loaded, idle]).worker == W[0]
    assert decide(job(A), [worker(W[0], backlog=2), idle]).worker == W[1]


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
        chosen = decide(job(A), snapshot, k=2, bound=100).worker
        backlog[chosen] += 1
    assert set(backlog) == set(pair) and abs(backlog[pair[0]] - backlog[pair[1]]) <= 1


def test_a_job_with_several_loras_prefers_the_worker_holding_most_of_them():
    rich = worker(W[0], resident={MODEL: frozenset({A, B})})
    poor = worker(W[1], resident={MODEL: frozenset({C})})
    assert decide(job(A, B, C), [rich, poor]).worker == W[0]
