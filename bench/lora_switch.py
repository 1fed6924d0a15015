"""Switch cost of LoRA adapters: moving a long-lived pipeline from one job's LoRAs to the next job's, by route,
against the memory-copy floor of the bytes the switch must move.

Routes (each `AdapterManager.apply(job)` + `reset()`, timed; naive is diffusers' per-request route):

- naive: `load_lora_weights` from the file + `set_adapters`, then `unload_lora_weights`, every job;
- resident hit (unfused): the job's LoRAs are still loaded from the last job, only activated;
- fused, same LoRAs again: the merged weights of the last job are kept;
- fused switch: restore the base weights the last job's LoRAs touched (copy from the host backup), merge the next
  job's LoRAs (both jobs resident); fused routes reset with `keep_merged=True`, as the worker does after a job that
  succeeded, so the restore happens in the next `apply()`;
- host-tier miss: the job's LoRAs were evicted from the device (`max_resident` = one job) and come back from the
  host-memory tier; unfused, and fused (restore + copy back + merge);
- file miss: the same eviction with the host tier off, so the file is parsed and loaded again.

Floors: one `copy_` of the job's LoRA tensor bytes (host RAM to RAM on a CPU, pinned host memory to the GPU on
CUDA), and of the base-weight bytes a fused switch touches (scaled from the measured copy bandwidth).

`python -m bench lora_switch` measures it on a Wan 2.1 1.3B-shaped transformer on the CPU
(`LORASITE_BENCH_SWITCH_BLOCKS` blocks, default the full 30; `LORASITE_BENCH_SWITCH_REPEATS` jobs per route,
default 3); `bench/gpu.py` runs the same routes on the Wan 2.2 A14B pair.
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.adapters import (
    LORA_MODULES,
    WAN_13B,
    _load_note,
    _loadavg,
    _lora_tensor_bytes,
    _ms,
    _quiet,
    copy_floor,
    wan_slice_with_loras,
)
from bench.report import Section

HOST_TIER_TARGET = 5.0  # a host-tier miss, x the copy floor of the job's LoRA bytes
HIT_TARGET_SECONDS = 0.005
RANK = 32
WARMUP = 2  # jobs per route before timing: alternating routes load both jobs once
HOST_TIER_BYTES = 64 * 1024**3  # large enough for every LoRA of the benchmark


@dataclass(frozen=True)
class SwitchRoute:
    key: str
    label: str
    options: dict | None  # AdapterManager options; None: naive
    alternate: bool  # alternate two jobs with different LoRAs (else the same job every time)
    keep_merged: bool = False  # reset(keep_merged=True) after each job, as the worker does after a successful one


def switch_routes(job_size: int) -> list[SwitchRoute]:
    evicting = {"residency": "cache", "max_resident": job_size}
    return [
        SwitchRoute("naive", "naive: load_lora_weights from the file + set_adapters, unload_lora_weights", None, True),
        SwitchRoute(
            "hit",
            "resident hit, unfused (the same LoRAs as the last job)",
            {"residency": "cache", "apply_mode": "unfused"},
            False,
        ),
        SwitchRoute(
            "fused_keep",
            "fused, the same LoRAs and weights as the last job (merged state kept)",
            {"residency": "cache", "apply_mode": "fused"},
            False,
            keep_merged=True,
        ),
        SwitchRoute(
            "fused_switch",
            "fused switch: restore the touched weights + merge the other job's LoRAs",
            {"residency": "cache", "apply_mode": "fused"},
            True,
            keep_merged=True,
        ),
        SwitchRoute(
            "host_miss",
            "host-tier miss, unfused: evicted from the device, back from host RAM",
            {**evicting, "apply_mode": "unfused", "host_tier_bytes": HOST_TIER_BYTES},
            True,
        ),
        SwitchRoute(
            "host_miss_fused",
            "host-tier miss, fused: restore + back from host RAM + merge",
            {**evicting, "apply_mode": "fused", "host_tier_bytes": HOST_TIER_BYTES},
            True,
            keep_merged=True,
        ),
        SwitchRoute(
            "file_miss",
            "file miss, unfused: evicted, host tier off (parse and load the file again)",
            {**evicting, "apply_mode": "unfused", "host_tier_bytes": 0},
            True,
        ),
    ]


@dataclass
class SwitchResult:
    route: SwitchRoute
    apply: float = 0.0
    reset: float = 0.0
    total: float = 0.0
    stats: str = ""  # the manager's last_apply_stats of the last timed job


def _naive_apply(pipe, job: list) -> None:
    for n, spec in enumerate(job):
        targets = ("high", "low") if spec.expert == "both" else (spec.expert,)
        for expert in targets:
            extra = {"load_into_transformer_2": True} if expert == "low" else {}
            pipe.load_lora_weights(str(spec.path), adapter_name=f"naive_{n}", use_safetensors=True, **extra)
    pipe.set_adapters([f"naive_{n}" for n in range(len(job))], [spec.weight for spec in job])


def measure_switches(
    pipe, jobs: list[list], *, repeats: int, sync=lambda: None, progress=lambda text: None
) -> list[SwitchResult]:
    """Time apply + reset of `repeats` jobs per route after WARMUP jobs; `jobs` are two lists of AdapterSpecs of
    the same shapes (alternating routes switch between them)."""
    from generation.runtime.adapters import AdapterManager

    results = []
    for route in switch_routes(len(jobs[0])):
        progress(route.key)
        manager = AdapterManager(pipe, **route.options) if route.options is not None else None
        samples, result = [], SwitchResult(route)
        try:
            for i in range(WARMUP + repeats):
                job = jobs[i % 2] if route.alternate else jobs[0]
                t0 = time.perf_counter()
                if manager is None:
                    _naive_apply(pipe, job)
                else:
                    manager.apply(job)
                sync()
                t1 = time.perf_counter()
                if manager is None:
                    pipe.unload_lora_weights()
                else:
                    manager.reset(keep_merged=route.keep_merged)
                sync()
                if i >= WARMUP:
                    samples.append((t1 - t0, time.perf_counter() - t1))
            if manager is not None:
                result.stats = _describe_stats(manager.last_apply_stats)
        finally:
            if manager is not None:
                manager.reset()  # restores any weights left merged
            pipe.unload_lora_weights()
        result.apply = statistics.median(s[0] for s in samples)
        result.reset = statistics.median(s[1] for s in samples)
        result.total = statistics.median(sum(s) for s in samples)
        results.append(result)
        del manager
        gc.collect()
    return results


def _describe_stats(stats) -> str:
    """The manager's ApplyStats in a few words: where the adapters came from, and what was merged."""
    sources = Counter(stats.sources.values())
    text = ", ".join(f"{count} from {source}" for source, count in sorted(sources.items()))
    return f"{text}; {stats.merge}" + (f" ({stats.merged_layers} layers)" if stats.merged_layers else "")


def touched_bytes(pipe, experts: tuple[str, ...]) -> int:
    """Bytes of the base weights (and biases) of every LORA_MODULES layer of the given experts: what a fused
    switch restores and merges into."""
    from generation.runtime.pipelines import expert_modules

    total = 0
    for expert, module in expert_modules(pipe).items():
        if expert not in experts:
            continue
        for name, layer in module.named_modules():
            parts = name.split(".", 2)
            if parts[0] == "blocks" and len(parts) == 3 and parts[2] in LORA_MODULES:
                base = getattr(layer, "base_layer", layer)
                total += sum(p.numel() * p.element_size() for p in base.parameters(recurse=False))
    return total


SWITCH_HEADER = ["route", "apply ms", "reset ms", "per-job ms", "x floor (LoRA bytes)", "x naive"]


def switch_rows(
    results: list[SwitchResult], *, floor: float, touched_floor: float, floor_label: str, touched_label: str
) -> list[list[object]]:
    naive = next(r.total for r in results if r.route.key == "naive")
    rows = []
    for r in results:
        rows.append(
            [
                r.route.label,
                _ms(r.apply),
                _ms(r.reset),
                _ms(r.total),
                f"{r.total / floor:.1f}x",
                f"{r.total / naive:.2f}x",
            ]
        )
    rows.append([floor_label, _ms(floor), "-", _ms(floor), "1.0x", f"{floor / naive:.3f}x"])
    rows.append(
        [
            touched_label,
            _ms(touched_floor),
            "-",
            _ms(touched_floor),
            f"{touched_floor / floor:.1f}x",
            f"{touched_floor / naive:.2f}x",
        ]
    )
    return rows


def switch_verdict(results: list[SwitchResult], *, floor: float, what: str) -> tuple[str, bool]:
    by = {r.route.key: r for r in results}
    hit = by["hit"]
    hit_ok = hit.total <= HIT_TARGET_SECONDS
    hit_text = f"a resident hit costs {_ms(hit.total)} ms (target <= {HIT_TARGET_SECONDS * 1000:.0f} ms)"
    miss = by["host_miss"]
    ratio = miss.total / floor
    passed = ratio <= HOST_TIER_TARGET and hit_ok
    return (
        f"{'PASS' if passed else 'FAIL'}: {what}: a host-tier miss costs {_ms(miss.total)} ms, {ratio:.1f}x the "
        f"copy floor of the job's LoRA bytes (target <= {HOST_TIER_TARGET:.0f}x); {hit_text}"
    ), passed


def stats_note(results: list[SwitchResult]) -> str:
    described = [f"{r.route.key}: {r.stats}" for r in results if r.stats]
    return "What the manager reports for each route's last job (`last_apply_stats`): " + " | ".join(described) + "."


def run() -> list[Section]:
    import torch

    from generation.runtime.adapters import AdapterSpec

    blocks = int(os.environ.get("LORASITE_BENCH_SWITCH_BLOCKS", str(WAN_13B["num_layers"])))
    repeats = int(os.environ.get("LORASITE_BENCH_SWITCH_REPEATS", "3"))
    if blocks < 1 or repeats < 1:
        raise ValueError("LORASITE_BENCH_SWITCH_BLOCKS and LORASITE_BENCH_SWITCH_REPEATS must be >= 1")
    started, load = time.monotonic(), _loadavg()
    dtype = torch.bfloat16
    with tempfile.TemporaryDirectory(prefix="lorasite-bench-switch-") as tmp, _quiet():
        config, pipe, paths = wan_slice_with_loras(
            Path(tmp), blocks=blocks, seeds=(1, 2), rank=RANK, dtype=dtype, prefix="switch"
        )
        jobs = [
            [AdapterSpec(lora_id=n + 1, display_name=f"bench-{n + 1}", path=path, weight=0.8, expert="high")]
            for n, path in enumerate(paths)
        ]
        touched = touched_bytes(pipe, ("high",))
        results = measure_switches(pipe, jobs, repeats=repeats)
        lora_bytes = _lora_tensor_bytes(paths[0])
    floor = copy_floor(lora_bytes)
    touched_floor = floor * touched / lora_bytes
    what = f"Wan 1.3B-shaped transformer ({blocks} blocks), CPU"
    verdict, passed = switch_verdict(results, floor=floor, what=what)
    return [
        Section(
            title=f"LoRA switch cost: Wan 2.1 1.3B-shaped transformer on the CPU ({blocks} blocks), rank-{RANK} LoRA",
            method=(
                f"A `WanTransformer3DModel` with the Wan 2.1 T2V 1.3B config ({blocks} of its 30 "
                f"blocks; hidden {config['num_attention_heads'] * config['attention_head_dim']}, "
                f"FFN {config['ffn_dim']}), random bf16 weights, in a bare `WanPipeline`. A job uses "
                f"one rank-{RANK} bf16 "
                f"LoRA on {', '.join(LORA_MODULES)} of every block ({lora_bytes / 1e6:.0f} MB of "
                "tensors; the base weights "
                f"it touches: {touched / 1e9:.2f} GB). Each route is one `AdapterManager` (or naive diffusers calls) "
                "timing `apply(job)` and `reset()`; alternating routes switch between two such LoRAs. Median of "
                f"{repeats} jobs per route after {WARMUP} warm-up jobs; torch on {torch.get_num_threads()} threads. "
                "Floor: one `copy_` in RAM of the LoRA's tensor bytes; touched-bytes floor scaled "
                "from the same bandwidth."
            ),
            header=SWITCH_HEADER,
            rows=switch_rows(
                results,
                floor=floor,
                touched_floor=touched_floor,
                floor_label=f"floor: memory copy of the LoRA's {lora_bytes / 1e6:.0f} MB",
                touched_label=f"floor: memory copy of the {touched / 1e9:.2f} GB of touched weights",
            ),
            verdict=verdict,
            passed=passed,
            notes=[stats_note(results), _load_note(load) + f" Section time {time.monotonic() - started:.0f} s."],
        )
    ]
