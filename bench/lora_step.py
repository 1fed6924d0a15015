"""Per-denoising-step cost of LoRA adapters: the base transformer against 1 and 5 LoRAs, unfused and fused.

A slice of the Wan 2.1 1.3B transformer (its full width, `LORASITE_BENCH_STEP_BLOCKS` blocks, default 2, so that
two CPU cores run it) with random bf16 weights, at the token count of a small Wan video; rank-32 LoRAs on every
attention and FFN projection, applied by the worker's `AdapterManager` with `apply_mode="unfused"` (PEFT LoRA
layers compute the low-rank path every forward) or `"fused"` (the deltas merged into the base weights).

The configurations are measured side by side: each round times one forward of every configuration in turn (every
other round in reverse order), so a change of load on the machine shifts them alike; the figures are medians over
`LORASITE_BENCH_STEP_REPEATS` rounds (default 5) and the ratios are taken against the base of the same run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.adapters import (
    LORA_MODULES,
    WAN_13B,
    _load_note,
    _loadavg,
    _quiet,
    wan_slice_with_loras,
)
from bench.report import Section

TARGET_FUSED_RATIO = 1.02  # fused, 5 LoRAs, per step against the base
RANK = 32
LORA_COUNTS = (1, 5)
TEXT_TOKENS = 512  # Wan's prompt length (UMT5, padded)
# A 17-frame 240x416 video: the Wan VAE compresses 4x in time ((17 - 1) / 4 + 1 = 5 latent frames) and 8x in
# space (30 x 52 latents), and the transformer patchifies 1x2x2: 5 x 15 x 26 = 1,950 tokens.
FRAMES, HEIGHT, WIDTH = 17, 240, 416


def wan_tokens(frames: int, height: int, width: int, patch: tuple[int, int, int] = (1, 2, 2)) -> int:
    """Transformer tokens of a Wan video: latent frames x latent height x latent width / patch volume."""
    latent = ((frames - 1) // 4 + 1, height // 8, width // 8)
    return (latent[0] // patch[0]) * (latent[1] // patch[1]) * (latent[2] // patch[2])


def wan_inputs(
    config: dict, *, frames: int, height: int, width: int, text_tokens: int, device, dtype, batch: int = 1
) -> dict:
    """Random transformer inputs of one forward: latents, a timestep, prompt embeddings."""
    import torch

    generator = torch.Generator(device=device).manual_seed(0)
    latent_shape = (batch, config["in_channels"], (frames - 1) // 4 + 1, height // 8, width // 8)
    return {
        "hidden_states": torch.randn(latent_shape, generator=generator, device=device, dtype=dtype),
        "timestep": torch.full((batch,), 500.0, device=device),
        "encoder_hidden_states": torch.randn(
            batch, text_tokens, config["text_dim"], generator=generator, device=device, dtype=dtype
        ),
        "return_dict": False,
    }


def merged_layers(pipe) -> tuple[int, int]:
    """(merged, all) PEFT LoRA layers of the pipeline's experts: how the adapters are applied right now."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from generation.runtime.pipelines import expert_modules

    layers = [m for e in expert_modules(pipe).values() for m in e.modules() if isinstance(m, BaseTunerLayer)]
    return sum(1 for layer in layers if layer.merged), len(layers)


def run() -> list[Section]:
    import torch

    blocks = int(os.environ.get("LORASITE_BENCH_STEP_BLOCKS", "2"))
    repeats = int(os.environ.get("LORASITE_BENCH_STEP_REPEATS", "5"))
    if blocks < 1 or repeats < 1:
        raise ValueError("LORASITE_BENCH_STEP_BLOCKS and LORASITE_BENCH_STEP_REPEATS must be >= 1")
    started, load = time.monotonic(), _loadavg()
    dtype = torch.bfloat16
    tokens = wan_tokens(FRAMES, HEIGHT, WIDTH)
    with tempfile.TemporaryDirectory(prefix="lorasite-bench-step-") as tmp, _quiet():
        config, pipe, paths = wan_slice_with_loras(
            Path(tmp), blocks=blocks, seeds=range(max(LORA_COUNTS)), rank=RANK, dtype=dtype, prefix="step"
        )
        inputs = wan_inputs(
            config, frames=FRAMES, height=HEIGHT, width=WIDTH, text_tokens=TEXT_TOKENS, device="cpu", dtype=dtype
        )
        timings = measure_steps(pipe, paths, inputs, repeats=repeats)
    return [
        step_section(
            timings,
            blocks=blocks,
            tokens=tokens,
            repeats=repeats,
            started=started,
            load=load,
            threads=torch.get_num_threads(),
            device="cpu",
        )
    ]


class StepTimings:
    """Per-configuration forward times, merged-layer counts and outputs of one side-by-side run."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, int], list[float]] = {}
        self.merged: dict[tuple[str, int], tuple[int, int]] = {}
        self.outputs: dict[tuple[str, int], object] = {}
        self.apply_seconds: dict[tuple[str, int], list[float]] = {}

    def median(self, key: tuple[str, int]) -> float:
        return statistics.median(self.samples[key])


APPLY_MODES = ("unfused", "fused")


def step_configs() -> list[tuple[str, int]]:
    return [("base", 0)] + [(mode, n) for mode in APPLY_MODES for n in LORA_COUNTS]


def measure_steps(
    pipe, paths: list[Path], inputs: dict, *, repeats: int, steps_per_config: int = 1, step=None, sync=lambda: None
) -> StepTimings:
    """Time `steps_per_config` denoising steps `step(pipe, inputs, index)` (default: one forward of
    `pipe.transformer`) per configuration, all configurations in turn, `repeats` rounds. Each configuration is
    applied outside the timing by the `AdapterManager` of its apply mode (residency "unload", so that reset leaves
    exactly the base model); every LoRA targets every expert the pipeline has."""
    import torch

    from generation.runtime.adapters import AdapterManager, AdapterSpec

    step = step or (lambda p, x, index: p.transformer(**x))
    experts = "both" if getattr(pipe, "transformer_2", None) is not None else "high"
    specs = [
        AdapterSpec(lora_id=n + 1, display_name=f"bench-{n + 1}", path=path, weight=0.8, expert=experts)
        for n, path in enumerate(paths)
    ]
    # One manager per apply mode for the whole run, so that fused mode backs the pristine weights up once.
    managers = {mode: AdapterManager(pipe, residency="unload", apply_mode=mode) for mode in APPLY_MODES}
    timings = StepTimings()
    with torch.no_grad():
        for index in range(steps_per_config):  # warm-up: first-call allocations and kernel selection
            step(pipe, inputs, index)
        sync()
        for round_index in range(repeats):
            configs = step_configs()
            # Every other round in reverse order, so that a drift in the machine's load favours no configuration.
            for mode, count in configs if round_index % 2 == 0 else configs[::-1]:
                key = (mode, count)
                manager = managers.get(mode)
                if count:
                    applied = time.perf_counter()
                    manager.apply(specs[:count])
                    sync()
                    timings.apply_seconds.setdefault(key, []).append(time.perf_counter() - applied)
                timings.merged[key] = merged_layers(pipe)
                try:
                    for index in range(steps_per_config):
                        t0 = time.perf_counter()
                        output = step(pipe, inputs, index)
                        sync()
                        timings.samples.setdefault(key, []).append(time.perf_counter() - t0)
                    if key not in timings.outputs:
                        timings.outputs[key] = output[0].float().cpu()
                finally:
                    if count:
                        manager.reset()  # residency "unload": exactly the base model again
    return timings


def _ratio(timings: StepTimings, key: tuple[str, int]) -> float:
    return timings.median(key) / timings.median(("base", 0))


def _agreement(timings: StepTimings, count: int) -> str:
    a, b = timings.outputs.get(("unfused", count)), timings.outputs.get(("fused", count))
    if a is None or b is None:
        return "-"
    return f"{float((a - b).abs().max() / a.abs().max()):.1e}"


def step_rows(timings: StepTimings) -> list[list[object]]:
    rows = []
    for key in step_configs():
        mode, count = key
        merged, layers = timings.merged[key]
        label = "base (no LoRA)" if mode == "base" else f"{count} LoRA{'s' if count > 1 else ''}, {mode}"
        apply = timings.apply_seconds.get(key)
        rows.append(
            [
                label,
                f"{timings.median(key) * 1000:.0f}",
                f"{_ratio(timings, key):.3f}x",
                f"{statistics.median(apply) * 1000:.0f}" if apply else "-",
                f"{merged}/{layers}" if layers else "-",
                _agreement(timings, count) if mode == "fused" else "-",
            ]
        )
    return rows


STEP_HEADER = ["configuration", "per-step ms", "x base", "apply ms", "merged layers", "fused vs unfused"]


def step_verdict(timings: StepTimings, *, what: str) -> tuple[str, bool]:
    most = max(LORA_COUNTS)
    unfused = _ratio(timings, ("unfused", most))
    ratio = _ratio(timings, ("fused", most))
    merged, layers = timings.merged[("fused", most)]
    really_fused = layers > 0 and merged == layers
    passed = ratio <= TARGET_FUSED_RATIO and really_fused
    verdict = (
        f"{'PASS' if passed else 'FAIL'}: {what}: {most} fused LoRAs cost {ratio:.3f}x base per step "
        f"(target <= {TARGET_FUSED_RATIO}x); unfused {unfused:.2f}x"
    )
    if not really_fused:
        verdict += f"; only {merged}/{layers} LoRA layers were merged in fused mode"
    return verdict, passed


def step_section(
    timings: StepTimings,
    *,
    blocks: int,
    tokens: int,
    repeats: int,
    started: float,
    load: str,
    threads: int,
    device: str,
) -> Section:
    verdict, passed = step_verdict(timings, what=f"Wan 1.3B-width slice, {tokens:,} tokens, {device}")
    hidden = WAN_13B["num_attention_heads"] * WAN_13B["attention_head_dim"]
    return Section(
        title=f"Per-step LoRA overhead: Wan 1.3B-width transformer slice on the CPU, {tokens:,} tokens, rank-{RANK}",
        method=(
            f"A `WanTransformer3DModel` with the Wan 2.1 T2V 1.3B config cut to {blocks} blocks (hidden {hidden}, "
            f"FFN {WAN_13B['ffn_dim']}), random bf16 weights, inside a bare `WanPipeline`. One step = one transformer "
            f"forward (batch 1; CFG's second forward costs the same) of a {FRAMES}-frame {HEIGHT}x{WIDTH} video: "
            f"({FRAMES} - 1) / 4 + 1 = {(FRAMES - 1) // 4 + 1} latent frames x {HEIGHT // 16} x {WIDTH // 16} "
            f"patches (VAE 4x time, 8x space; patch 1x2x2) = {tokens:,} tokens, with {TEXT_TOKENS} prompt tokens. "
            f"LoRAs: rank {RANK}, bf16, on {', '.join(LORA_MODULES)} of every block, weight 0.8, applied by "
            "`AdapterManager(apply_mode=...)` outside the timing. Every round times one step of each configuration "
            f"in turn; median of {repeats} rounds; torch on {threads} threads."
        ),
        header=STEP_HEADER,
        rows=step_rows(timings),
        verdict=verdict,
        passed=passed,
        notes=[
            "merged layers: PEFT LoRA layers with `merged` set while the step ran (all of them when fused, none "
            "when unfused). fused vs unfused: max |fused - unfused| / max |unfused| of the step's output with the "
            "same LoRAs (bf16 rounding of the merged weights).",
            "Issue's reference on this kind of machine (Wan 1.3B-width slice, 1,950 tokens, rank-32 LoRAs on "
            "attention and FFN): 1 unfused LoRA 1.13x base, 5 unfused 1.61x, merged about 1.00x.",
            _load_note(load) + f" Section time {time.monotonic() - started:.0f} s.",
        ],
    )
