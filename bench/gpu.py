"""python -m bench gpu: LoRA adapters on a Wan 2.2 A14B-shaped transformer pair on one CUDA GPU.

Three tables: measured peak GPU memory against `generation.runtime.memory_plan` for the `gpu` and `model_offload`
placements; per-step time at 480x832, 81 frames (32,760 tokens) for base / unfused / fused with 1 and 5 rank-64
LoRAs; and the switch costs of `bench.lora_switch` against the host-to-device copy floor.

Runs without Django, moto or this project's venv (the device machine has python3 with torch, transformers, peft,
accelerate and safetensors, but no diffusers and no registry access): it imports only `bench.*` and the plain-Python
worker runtime (`generation.runtime.*`), builds the transformers with random bf16 weights (meta device +
`to_empty`, no checkpoint) and writes its LoRA files to a temporary directory on local disk. On the device machine,
with ``carry=[".device"]`` (the pinned diffusers wheel, downloaded by
``.venv/bin/pip download diffusers==0.42.1 --no-deps -d .device/wheels``)::

    python3 -m pip install --no-deps .device/wheels/diffusers-0.42.1-py3-none-any.whl \\
        && python3 -m bench gpu 2>&1 | tee "$OUT/bench-gpu.log"; cp docs/benchmarks.md "$OUT/"

It rewrites the `gpu` block of docs/benchmarks.md there; the copy in `$OUT` brings it back. diffusers 0.42.1 also
imports Pillow and needs huggingface_hub >= 1.32 (not installed by ``--no-deps``): the import at the start fails
within seconds if the machine lacks them.

Estimated (it has not yet run on a GPU): 4-6 minutes on one H100/H200 (budget: 8), about 70 GiB of GPU memory
and up to about 100 GiB of host memory (the pinned pristine backups of fused mode, and earlier the model_offload
copy of both experts). The progress lines (`[gpu N s] ...`) say where the time went. Knobs: `LORASITE_BENCH_GPU_REPEATS`
(per-step rounds, default 1), `LORASITE_BENCH_GPU_SWITCH_REPEATS` (timed jobs per switch route, default 3).

Smoke test, the same code end to end at a tiny scale on a CPU (no figures): ``LORASITE_BENCH_GPU_SMOKE=1 python -m
bench gpu --no-write`` (tests/test_bench_gpu.py runs it with Django imports blocked).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from bench.adapters import (
    LORA_MODULES,
    WAN_A14B,
    WAN_COMMON,
    _lora_tensor_bytes,
    _quiet,
    bare_wan_pipeline,
    copy_floor,
    random_wan_transformer,
    write_wan_lora,
)
from bench.lora_step import (
    LORA_COUNTS,
    STEP_HEADER,
    measure_steps,
    step_rows,
    step_verdict,
    wan_inputs,
    wan_tokens,
)
from bench.lora_switch import (
    SWITCH_HEADER,
    WARMUP,
    measure_switches,
    stats_note,
    switch_rows,
    switch_verdict,
    touched_bytes,
)
from bench.report import Section, Skipped

GiB = 1024**3
STEPS_PER_CONFIG = 2  # one high-noise step, one low-noise step


@dataclass(frozen=True)
class Scale:
    config: dict
    frames: int
    height: int
    width: int
    text_tokens: int
    rank: int


FULL = Scale(config=WAN_A14B, frames=81, height=480, width=832, text_tokens=512, rank=64)
# Same code path, tiny tensors: a two-block transformer of hidden 32 at 3 x 2 x 2 tokens.
SMOKE = Scale(
    config=dict(WAN_COMMON, text_dim=32, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2),
    frames=9,
    height=32,
    width=32,
    text_tokens=8,
    rank=4,
)


def run() -> list[Section]:
    import torch

    smoke = os.environ.get("LORASITE_BENCH_GPU_SMOKE") == "1"
    cuda = torch.cuda.is_available()
    if not cuda and not smoke:
        raise Skipped(
            f"needs CUDA (torch {torch.__version__} sees no GPU); LORASITE_BENCH_GPU_SMOKE=1 runs a "
            "tiny CPU smoke test of the same code"
        )
    scale = SMOKE if smoke else FULL
    repeats = int(os.environ.get("LORASITE_BENCH_GPU_REPEATS", "1"))
    switch_repeats = int(os.environ.get("LORASITE_BENCH_GPU_SWITCH_REPEATS", "3"))
    with tempfile.TemporaryDirectory(prefix="lorasite-bench-gpu-") as tmp, _quiet():
        return GpuBench(scale, device="cuda" if cuda else "cpu", root=Path(tmp), smoke=smoke).run(
            repeats=repeats, switch_repeats=switch_repeats
        )


class GpuBench:
    def __init__(self, scale: Scale, *, device: str, root: Path, smoke: bool) -> None:
        import torch

        self.scale, self.device, self.root, self.smoke = scale, device, root, smoke
        self.cuda = device == "cuda"
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.started = time.monotonic()
        config = scale.config
        self.hidden = config["num_attention_heads"] * config["attention_head_dim"]
        self.tokens = wan_tokens(scale.frames, scale.height, scale.width)

    def progress(self, text: str) -> None:
        print(f"[gpu {time.monotonic() - self.started:5.0f} s] {text}", flush=True)

    def run(self, *, repeats: int, switch_repeats: int) -> list[Section]:
        import torch

        scale, config = self.scale, self.scale.config
        dtype = torch.bfloat16
        self.progress(
            f"building two transformers ({config['num_layers']} blocks, hidden {self.hidden}) on {self.device}"
        )
        high = random_wan_transformer(config, device=self.device, dtype=dtype, seed=0)
        low = random_wan_transformer(config, device=self.device, dtype=dtype, seed=1)
        pipe = bare_wan_pipeline(high, low)
        self.progress(f"writing {max(LORA_COUNTS)} rank-{scale.rank} LoRA files")
        paths = [
            write_wan_lora(
                self.root / f"a14b-r{scale.rank}-{n}.safetensors",
                hidden=self.hidden,
                ffn=config["ffn_dim"],
                blocks=config["num_layers"],
                rank=scale.rank,
                seed=n,
                dtype=dtype,
            )
            for n in range(max(LORA_COUNTS))
        ]
        inputs = wan_inputs(
            config,
            frames=scale.frames,
            height=scale.height,
            width=scale.width,
            text_tokens=scale.text_tokens,
            device=self.device,
            dtype=dtype,
        )
        planned = self.planned_peaks({"transformer": high, "transformer_2": low})

        self.progress("peak memory, placement gpu (one step per expert)")
        measured = {"gpu": self.peak_of(lambda: [self.step(pipe, inputs, i) for i in range(STEPS_PER_CONFIG)])}
        # Before any route pins host memory: model_offload needs a pageable host copy of both experts.
        self.progress("peak memory, placement model_offload")
        measured["model_offload"], offload_note = self.offload_peak(pipe, inputs)
        memory = self.memory_section(
            measured,
            planned,
            notes=[offload_note],
            weights=sum(p.numel() * p.element_size() for m in (high, low) for p in m.parameters()),
        )

        self.progress("per-step time")
        timings = measure_steps(
            pipe, paths, inputs, repeats=repeats, steps_per_config=STEPS_PER_CONFIG, step=self.step, sync=self.sync
        )
        step = self.step_section(timings, repeats)

        self.progress("switch costs")
        switch = self.switch_section(pipe, paths, switch_repeats)
        self.progress("done")
        sections = [memory, step, switch]
        switch.notes.append(f"Whole `bench gpu` run: {time.monotonic() - self.started:.0f} s (budget 8 minutes).")
        if self.smoke:  # tiny tensors on a CPU: the code ran, the figures mean nothing
            for section in sections:
                section.verdict = f"SMOKE (not judged): {section.verdict}"
                section.passed = None
        return sections

    # --- steps and memory -----------------------------------------------------------------------------------

    @staticmethod
    def step(pipe, inputs: dict, index: int):
        """One denoising step of Wan 2.2 A14B: one expert (high noise on even steps, low noise on odd ones) run
        twice, as diffusers' pipeline runs classifier-free guidance (conditional, then unconditional branch)."""
        expert = pipe.transformer if index % 2 == 0 else pipe.transformer_2
        expert(**inputs)
        return expert(**inputs)

    def peak_of(self, work) -> int | None:
        import torch

        if not self.cuda:
            with torch.no_grad():
                work()
            return None
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            work()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()

    def offload_peak(self, pipe, inputs: dict) -> tuple[int | None, str]:
        """The same steps under diffusers' `enable_model_cpu_offload` (one expert on the GPU at a time); then the
        hooks are removed and both experts go back to the GPU. Returns (peak, what happened); on a CPU (smoke)
        the hooks run from host to host and there is no peak to measure."""
        import torch

        try:
            pipe.to("cpu")
            started = time.monotonic()
            pipe.enable_model_cpu_offload(device=self.device)
            peak = self.peak_of(lambda: [self.step(pipe, inputs, i) for i in range(STEPS_PER_CONFIG)])
            note = (
                f"model_offload: one step per expert took {time.monotonic() - started:.0f} s, including "
                "moving each expert to the GPU and the previous one back."
            )
        except Exception as error:  # report it and measure the rest: the other tables do not depend on it
            peak, note = None, f"model_offload failed: {type(error).__name__}: {error}"
        pipe.remove_all_hooks()
        pipe.to(self.device)
        if self.cuda:
            torch.cuda.empty_cache()
        return peak, note

    def planned_peaks(self, experts: dict) -> dict[str, int] | str:
        """memory_plan's peaks for this pipeline: its two transformers (sized from the built modules) and the
        denoising reserve at this resolution; no text encoder or VAE here, so no VAE-decode phase."""
        try:
            from generation.runtime import memory_plan

            components = tuple(_component_size(memory_plan, name, module) for name, module in experts.items())
            config = self.scale.config
            model = SimpleNamespace(
                kind="video",
                vae_scale=8,
                vae_decode_channels=0,
                storage_dtype="",
                dims=SimpleNamespace(architecture="wan", hidden=self.hidden, ffn=config["ffn_dim"]),
            )
            reserve = memory_plan.activation_reserve(
                model, width=self.scale.width, height=self.scale.height, frames=self.scale.frames
            )
            return memory_plan.placement_peaks(components, dataclasses.replace(reserve, decode_bytes=0))
        except Exception as error:  # the planner is another module's API: report, don't lose the run
            return f"plan unavailable ({type(error).__name__}: {error})"

    def memory_section(self, measured: dict, planned: dict | str, *, notes: list[str], weights: int) -> Section:
        rows = []
        for placement in ("gpu", "model_offload"):
            peak = measured.get(placement)
            plan = planned.get(placement) if isinstance(planned, dict) else None
            rows.append([placement, _gib(peak), _gib(plan), f"{peak / plan:.2f}" if peak is not None and plan else "-"])
        notes = [f"Weights of the two experts: {_gib(weights)} GiB (bf16; diffusers' fp32 modules kept fp32).", *notes]
        if isinstance(planned, str):
            notes.append(planned)
        if not self.cuda:
            notes.append("Smoke run on a CPU: no GPU memory to measure.")
        ok = isinstance(planned, dict) and all(
            measured.get(p) is not None and measured[p] <= planned[p] for p in ("gpu", "model_offload")
        )
        verdict = (
            "INFO: measured peaks "
            + ", ".join(f"{p} {_gib(measured.get(p))} GiB" for p in measured)
            + ("; all within the plan's estimate" if ok else "; see the table against the plan")
        )
        return Section(
            title=f"GPU memory: Wan 2.2 A14B-shaped pair at {self.tokens:,} tokens, measured peak vs memory_plan",
            method=(
                "`torch.cuda.max_memory_allocated()` over one denoising step per expert (two forwards each, CFG) "
                f"at {self.scale.width}x{self.scale.height}, {self.scale.frames} frames, after "
                "`reset_peak_memory_stats()`: `gpu` with both experts resident, `model_offload` under diffusers' "
                "`enable_model_cpu_offload`. Plan: `memory_plan.placement_peaks` for the two transformers sized from "
                "the built modules, denoising reserve from `memory_plan.activation_reserve` (no VAE here)."
            ),
            header=["placement", "measured peak GiB", "planned peak GiB", "measured / plan"],
            rows=rows,
            verdict=verdict,
            passed=None,
            notes=notes,
            machine=self.machine(),
        )

    def machine(self) -> dict[str, str]:
        import torch

        if not self.cuda:
            return {}
        return {"GPU": torch.cuda.get_device_name(0), "CUDA": str(torch.version.cuda)}

    def step_section(self, timings, repeats: int) -> Section:
        what = f"Wan 2.2 A14B-shaped pair, {self.tokens:,} tokens, {self.device}"
        verdict, passed = step_verdict(timings, what=what)
        scale = self.scale
        return Section(
            title=f"Per-step LoRA overhead: Wan 2.2 A14B-shaped pair on {self.device}, {self.tokens:,} tokens, "
            f"rank-{scale.rank}",
            method=(
                f"Two `WanTransformer3DModel`s with the A14B expert config (hidden {self.hidden}, FFN "
                f"{scale.config['ffn_dim']}, {scale.config['num_layers']} blocks), random bf16 weights on the "
                f"device, in a bare `WanPipeline`. {scale.frames} frames at {scale.width}x{scale.height}: "
                f"{(scale.frames - 1) // 4 + 1} latent frames x {scale.height // 16} x {scale.width // 16} patches = "
                f"{self.tokens:,} tokens, {scale.text_tokens} prompt tokens. A step = one expert run twice "
                f"(classifier-free guidance, as diffusers runs it); {STEPS_PER_CONFIG} steps per configuration, one "
                "on each expert, per-step = their median. Every LoRA is loaded into both experts "
                f"(rank {scale.rank}, bf16, {len(LORA_MODULES)} projections per block), applied by `AdapterManager` "
                f"outside the timing; {repeats} round(s) of all configurations in turn, each step ending with "
                "`torch.cuda.synchronize()`."
            ),
            header=STEP_HEADER,
            rows=step_rows(timings),
            verdict=verdict,
            passed=passed,
            notes=["merged layers and fused vs unfused as in the CPU `lora_step` table."],
            machine=self.machine(),
        )

    def switch_section(self, pipe, paths: list[Path], repeats: int) -> Section:
        from generation.runtime.adapters import AdapterSpec

        # A Wan 2.2 job: one high-noise and one low-noise LoRA; two such jobs to switch between.
        jobs = [
            [
                AdapterSpec(
                    lora_id=100 + 2 * j + k,
                    display_name=f"bench-{100 + 2 * j + k}",
                    path=paths[2 * j + k],
                    weight=0.8,
                    expert=("high", "low")[k],
                )
                for k in (0, 1)
            ]
            for j in (0, 1)
        ]
        touched = touched_bytes(pipe, ("high", "low"))
        results = measure_switches(
            pipe, jobs, repeats=repeats, sync=self.sync, progress=lambda key: self.progress(f"switch route {key}")
        )
        lora_bytes = sum(_lora_tensor_bytes(spec.path) for spec in jobs[0])
        floor = copy_floor(lora_bytes, device=self.device)
        touched_floor = floor * touched / lora_bytes
        kind = "host-to-device copy (pinned)" if self.cuda else "memory copy"
        verdict, passed = switch_verdict(results, floor=floor, what=f"Wan 2.2 A14B-shaped pair, {self.device}")
        return Section(
            title=f"LoRA switch cost: Wan 2.2 A14B-shaped pair on {self.device}, a rank-{self.scale.rank} LoRA per "
            "expert",
            method=(
                "The routes of `bench.lora_switch` on the pair above: a job is one high-noise and one low-noise "
                f"LoRA ({lora_bytes / 1e6:.0f} MB of tensors together; the base weights they touch: "
                f"{touched / 1e9:.1f} GB). Each phase ends with a device sync. Median of {repeats} jobs per route "
                f"after {WARMUP} warm-up jobs. Floor: one {kind} of the job's LoRA bytes; touched-bytes floor "
                "scaled from the same bandwidth."
            ),
            header=SWITCH_HEADER,
            rows=switch_rows(
                results,
                floor=floor,
                touched_floor=touched_floor,
                floor_label=f"floor: {kind} of {lora_bytes / 1e6:.0f} MB",
                touched_label=f"floor: {kind} of the {touched / 1e9:.1f} GB of touched weights",
            ),
            verdict=verdict,
            passed=passed,
            notes=[stats_note(results)],
            machine=self.machine(),
        )


def _component_size(memory_plan, name: str, module):
    blocks = [sum(p.numel() for p in block.parameters()) for block in module.blocks]
    return memory_plan.ComponentSize(
        name=name,
        params=sum(p.numel() for p in module.parameters()),
        dtype="bf16",
        storage_dtype="bf16",
        source="built module",
        largest_block_params=max(blocks),
        block_params=sum(blocks),
        largest_tensor_params=max(p.numel() for p in module.parameters()),
    )


def _gib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / GiB:.1f}"
