"""Fused LoRA application, every LoRA-loadable component and the host-memory tier, on the demo pipelines (CPU).

Bitwise means torch.equal on every parameter and buffer of every component. Fused and unfused outputs of the
same job agree within FUSED_TOLERANCE: the same sums in another order (fp32 here; bf16 on a GPU rounds more).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from generation.runtime.adapters import AdapterManager, AdapterSpec, LoRALoadError, lora_components
from generation.runtime.adapters.host_tier import HostTier
from generation.runtime.generate import GenerationCancelled, run_pipeline
from generation.runtime.pipelines import PipelineRegistry
from tests.lora_files import write_kohya_flux_lora_with_text_encoder
from tests.runtime_fixtures import RUN_ARGS, assert_differs, assert_same, write_lora

WAN22 = "wan22-a14b-demo"
FLUX = "flux-demo"
PIPELINE_CLASSES = {WAN22: "WanPipeline", FLUX: "FluxPipeline"}
# Outputs are in [0, 1]; merged vs per-step LoRA branches differ only by float rounding.
FUSED_TOLERANCE = 1e-5


@pytest.fixture
def load(demo_models: dict[str, Path]) -> Callable:
    def load(key: str = WAN22):
        return PipelineRegistry().get(key, path=demo_models[key], pipeline_class=PIPELINE_CLASSES[key])

    return load


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fused-loras")
    files = {f"wan{seed}": write_lora(folder / f"wan{seed}.safetensors", seed=seed) for seed in range(1, 6)}
    files["flux_te"] = write_kohya_flux_lora_with_text_encoder(folder / "flux_te.safetensors", seed=3)
    return files


def spec(lora_id: int, path: Path, weight: float = 1.0, expert: str = "high") -> AdapterSpec:
    return AdapterSpec(lora_id=lora_id, display_name=f"style_{lora_id}", path=path, weight=weight, expert=expert)


def generate(pipe, **overrides) -> np.ndarray:
    kind = "image" if type(pipe).__name__ == "FluxPipeline" else "video"
    return run_pipeline(
        pipe, kind=kind, on_step=lambda s, t: None, should_cancel=lambda: False, **{**RUN_ARGS, **overrides}
    )


def run_job(manager: AdapterManager, specs: list[AdapterSpec], *, keep_merged: bool = False) -> np.ndarray:
    try:
        manager.apply(specs)
        output = generate(manager.pipe)
    except BaseException:
        manager.reset()
        raise
    manager.reset(keep_merged=keep_merged)
    return output


def base_tensors(pipe) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of every component, by its base-model name (LoRA wrappers and weights left out)."""
    tensors = {}
    for component_name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        for name, tensor in (*component.named_parameters(), *component.named_buffers()):
            if ".lora_" in name:
                continue
            tensors[f"{component_name}.{name.replace('.base_layer', '')}"] = tensor.detach().clone()
    return tensors


def assert_pristine(pipe, pristine: dict[str, torch.Tensor]) -> None:
    now = base_tensors(pipe)
    assert now.keys() == pristine.keys()
    changed = [name for name, tensor in now.items() if not torch.equal(tensor, pristine[name])]
    assert changed == [], f"{len(changed)} tensors differ from the pristine pipeline, e.g. {changed[:3]}"


def lora_layers(module: torch.nn.Module) -> list[BaseTunerLayer]:
    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def assert_nothing_enabled(pipe) -> None:
    for component in lora_components(pipe).values():
        assert all(layer.disable_adapters and not layer.merged for layer in lora_layers(component))


def test_lora_components_are_what_diffusers_loads_into(load, loras) -> None:
    """Pins the private `_lora_loadable_modules` against the public get_list_adapters."""
    flux, wan = load(FLUX), load(WAN22)
    assert list(lora_components(flux)) == ["transformer", "text_encoder"]
    assert list(lora_components(wan)) == ["transformer", "transformer_2"]
    AdapterManager(flux).apply([spec(1, loras["flux_te"])])
    AdapterManager(wan).apply([spec(1, loras["wan1"], expert="both")])
    assert flux.get_list_adapters() == dict.fromkeys(lora_components(flux), ["lora_1"])
    assert wan.get_list_adapters() == dict.fromkeys(lora_components(wan), ["lora_1"])


@pytest.mark.parametrize("apply_mode", ["fused", "unfused"])
def test_a_text_encoder_lora_gets_the_jobs_weight_and_is_off_afterwards(load, loras, apply_mode: str) -> None:
    pipe = load(FLUX)
    pristine, base = base_tensors(pipe), generate(pipe)
    manager = AdapterManager(pipe, residency="cache", apply_mode=apply_mode)
    token_ids = torch.arange(1, 12).unsqueeze(0)
    base_embedding = pipe.text_encoder(token_ids).last_hidden_state

    manager.apply([spec(1, loras["flux_te"], weight=0.6)])
    text_layers = lora_layers(pipe.text_encoder)
    assert len(text_layers) == 12  # 2 CLIP layers x (q, k, v, out, fc1, fc2)
    # kohya alphas are folded into the weights by diffusers' converter, so the scale is the job's weight.
    assert all(layer.scaling == {"lora_1": 0.6} for layer in text_layers)
    assert all(layer.merged == (apply_mode == "fused") for layer in text_layers)
    assert_differs(pipe.text_encoder(token_ids).last_hidden_state.detach().numpy(), base_embedding.detach().numpy())
    with_lora = generate(pipe)
    manager.reset()

    assert_differs(with_lora, base)
    assert manager.resident_adapters == ["lora_1"]  # still loaded into both components, but off
    assert_nothing_enabled(pipe)
    assert_pristine(pipe, pristine)
    assert torch.equal(pipe.text_encoder(token_ids).last_hidden_state, base_embedding)
    assert_same(generate(pipe), base)


@pytest.mark.parametrize("residency", ["cache", "unload"])
@pytest.mark.parametrize("apply_mode", ["fused", "unfused"])
def test_twenty_alternating_jobs_leave_every_tensor_pristine(load, loras, apply_mode: str, residency: str) -> None:
    wan, flux = load(WAN22), load(FLUX)
    pristine = {WAN22: base_tensors(wan), FLUX: base_tensors(flux)}
    managers = {
        WAN22: AdapterManager(wan, residency=residency, apply_mode=apply_mode, max_resident=2),
        FLUX: AdapterManager(flux, residency=residency, apply_mode=apply_mode),
    }
    jobs = [
        (WAN22, [spec(1, loras["wan1"], 0.8, "both")]),
        (WAN22, [spec(2, loras["wan2"], 0.5, "low"), spec(3, loras["wan3"], 1.0, "high")]),
        (WAN22, []),
        (FLUX, [spec(9, loras["flux_te"], 0.7)]),
        (WAN22, [spec(1, loras["wan1"], 0.3, "both"), spec(4, loras["wan4"], 0.9, "low")]),
    ]
    for index in range(20):
        key, specs = jobs[index % len(jobs)]
        manager = managers[key]
        manager.apply(specs)
        if index < len(jobs):  # one full run per kind of job; the weights are what the rest checks
            generate(manager.pipe, steps=1)
        # Every other job leaves its merge for an identical next job, which the next different job restores.
        manager.reset(keep_merged=index % 2 == 0)
    for key, manager in managers.items():
        manager.reset()
        assert_pristine(manager.pipe, pristine[key])
        assert_nothing_enabled(manager.pipe)


def test_fused_and_unfused_outputs_agree(load, loras) -> None:
    five = [
        spec(1, loras["wan1"], 0.2, "high"),
        spec(2, loras["wan2"], 0.4, "low"),
        spec(3, loras["wan3"], 0.6, "both"),
        spec(4, loras["wan4"], 0.8, "high"),
        spec(5, loras["wan5"], 1.0, "low"),
    ]
    outputs = {}
    for mode in ("fused", "unfused"):
        outputs[mode] = run_job(AdapterManager(load(WAN22), apply_mode=mode), five)
    np.testing.assert_allclose(outputs["fused"], outputs["unfused"], rtol=0, atol=FUSED_TOLERANCE)
    flux_te = {
        mode: run_job(AdapterManager(load(FLUX), apply_mode=mode), [spec(1, loras["flux_te"], 0.7)])
        for mode in ("fused", "unfused")
    }
    np.testing.assert_allclose(flux_te["fused"], flux_te["unfused"], rtol=0, atol=FUSED_TOLERANCE)


def test_restore_copies_back_what_peft_unmerge_only_approximates(load, loras) -> None:
    """Pins the PEFT-private `merged_adapters` reset: after restore, PEFT sees the layer unmerged and its weights are
    the pristine ones bitwise, where PEFT's own unmerge (subtracting) is only close."""
    pipe = load(WAN22)
    to_q = pipe.transformer.blocks[0].attn1.to_q
    pristine = to_q.weight.detach().clone()
    manager = AdapterManager(pipe, residency="cache")
    manager.apply([spec(1, loras["wan1"], 0.7), spec(2, loras["wan2"], 0.9)])
    layer = pipe.transformer.blocks[0].attn1.to_q
    assert layer.merged and not torch.equal(layer.base_layer.weight, pristine)
    merged_weight = layer.base_layer.weight.detach().clone()
    layer.unmerge()  # PEFT's route: subtract each delta
    unmerged_by_peft = layer.base_layer.weight.detach().clone()
    assert not layer.merged
    layer.base_layer.weight.data.copy_(merged_weight)
    layer.merged_adapters = ["lora_1", "lora_2"]  # back to the merged state the manager recorded

    manager.reset()
    assert not layer.merged and layer.merged_adapters == []
    assert torch.equal(layer.base_layer.weight, pristine)
    torch.testing.assert_close(unmerged_by_peft, pristine, rtol=0, atol=1e-6)


def test_an_identical_next_job_keeps_the_merged_weights(load, loras, monkeypatch) -> None:
    pipe = load(WAN22)
    pristine, base = base_tensors(pipe), generate(pipe)
    manager = AdapterManager(pipe)
    job = [spec(1, loras["wan1"], 0.8, "both"), spec(2, loras["wan2"], 0.5, "low")]
    first = run_job(manager, job, keep_merged=True)
    assert manager.merged_adapters == ["lora_1", "lora_2"] and manager.active_adapters == []

    merges = []
    monkeypatch.setattr(manager._fused, "merge", lambda *args: merges.append(args))
    # Same set in another order: kept, no merge, bitwise the same output.
    assert_same(run_job(manager, list(reversed(job)), keep_merged=True), first)
    assert manager.last_apply_stats.merge == "kept" and merges == []
    monkeypatch.undo()

    other_weights = run_job(manager, [spec(1, loras["wan1"], 0.4, "both"), job[1]], keep_merged=True)
    assert manager.last_apply_stats.merge == "merged"
    assert_differs(other_weights, first)
    # A LoRA-free job restores first.
    assert_same(run_job(manager, []), base)
    assert manager.merged_adapters == []
    assert_pristine(pipe, pristine)


def test_failure_and_cancel_restore_the_base_weights(load, loras, monkeypatch) -> None:
    pipe = load(WAN22)
    pristine = base_tensors(pipe)
    manager = AdapterManager(pipe)
    job = [spec(1, loras["wan1"], 0.8, "both")]

    with pytest.raises(GenerationCancelled):
        manager.apply(job)
        try:
            run_pipeline(pipe, kind="video", on_step=lambda s, t: None, should_cancel=_yes_after_first(), **RUN_ARGS)
        finally:
            manager.reset()
    assert_pristine(pipe, pristine)

    with monkeypatch.context() as patch:
        patch.setattr(type(pipe.transformer), "forward", _raise)
        with pytest.raises(RuntimeError, match="out of memory"):
            run_job(manager, job, keep_merged=True)  # keep_merged only after a success: this job failed
    assert_pristine(pipe, pristine)

    # A merge failing halfway through: the layers merged so far are restored by apply's own reset.
    merged = []

    def merge_then_fail(layer, *args, **kwargs):
        if len(merged) == 7:
            raise RuntimeError("merge failed")
        merged.append(layer)
        return type(layer).merge(layer, *args, **kwargs)

    with monkeypatch.context() as patch:
        for layer in lora_layers(pipe.transformer):
            patch.setattr(layer, "merge", lambda *a, _layer=layer, **k: merge_then_fail(_layer, *a, **k))
        with pytest.raises(RuntimeError, match="merge failed"):
            manager.apply(job)
    assert manager.active_adapters == [] and manager.merged_adapters == []
    assert_pristine(pipe, pristine)
    assert_nothing_enabled(pipe)


def _yes_after_first() -> Callable[[], bool]:
    answers = iter([False, True])
    return lambda: next(answers, True)


def _raise(*args, **kwargs):
    raise RuntimeError("CUDA out of memory (simulated)")


class FileReads:
    """Counts LoRA files read (the manager reads a file's bytes once, hashes and parses them), while delegating."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = Path.read_bytes

        def spy(path: Path) -> bytes:
            if path.suffix == ".safetensors":
                self.paths.append(path.name)
            return real(path)

        monkeypatch.setattr(Path, "read_bytes", spy)


@pytest.mark.parametrize("key", [WAN22, FLUX])
def test_an_evicted_lora_comes_back_from_the_host_tier_without_its_file(
    load, loras, tmp_path, monkeypatch, key
) -> None:
    pipe = load(key)
    lora_file, other = (loras["flux_te"], loras["flux_te"]) if key == FLUX else (loras["wan1"], loras["wan2"])
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(lora_file.read_bytes())
    manager = AdapterManager(pipe, residency="cache", max_resident=1)
    reads = FileReads(monkeypatch)

    first = run_job(manager, [spec(1, moved, 0.8)])
    run_job(manager, [spec(2, other, 0.5)])  # evicts lora_1 from the device
    assert manager.resident_adapters == ["lora_2"] and manager.host_tier.paths == [moved, other]
    moved.unlink()
    again = run_job(manager, [spec(1, moved, 0.8)])

    assert manager.last_apply_stats.sources == {"lora_1": "host_tier"}
    assert reads.paths == ["moved.safetensors", other.name]  # each file parsed once
    assert_same(again, first)
    # And the tier's copy is what diffusers itself loads from the file (fused here, hence the tolerance).
    fresh = load(key)
    fresh.load_lora_weights(str(lora_file), adapter_name="lora_1", use_safetensors=True)
    fresh.set_adapters(["lora_1"], [0.8])
    np.testing.assert_allclose(again, generate(fresh), rtol=0, atol=FUSED_TOLERANCE)


def test_without_a_host_tier_an_evicted_lora_is_read_again(load, loras, monkeypatch) -> None:
    pipe = load(WAN22)
    manager = AdapterManager(pipe, residency="unload", host_tier_bytes=0)
    reads = FileReads(monkeypatch)
    run_job(manager, [spec(1, loras["wan1"])])
    run_job(manager, [spec(1, loras["wan1"])])
    assert reads.paths == ["wan1.safetensors"] * 2 and manager.last_apply_stats.sources == {"lora_1": "file"}
    with pytest.raises(LoRALoadError, match="could not be loaded"):
        manager.apply([spec(3, Path("/nonexistent/gone.safetensors"))])


def test_host_tier_is_a_byte_bounded_lru() -> None:
    tier = HostTier(max_bytes=3 * 400, pin_memory=False)
    tensors = {name: {"w": torch.zeros(100)} for name in ("a", "b", "c", "d")}  # 400 bytes each
    for name in ("a", "b", "c"):
        tier.put(Path(name), tensors[name])
    assert tier.get(Path("a")) is not None  # a is now the most recently used
    tier.put(Path("d"), tensors["d"])
    assert tier.paths == [Path("c"), Path("a"), Path("d")] and tier.nbytes == 1200
    tier.put(Path("huge"), {"w": torch.zeros(1000)})  # bigger than the whole tier: not kept, nothing evicted
    assert tier.paths == [Path("c"), Path("a"), Path("d")]
    with pytest.raises(ValueError):
        HostTier(max_bytes=-1, pin_memory=False)


def test_bad_options_are_refused(load) -> None:
    with pytest.raises(ValueError, match="apply_mode must be one of"):
        AdapterManager(load(WAN22), apply_mode="merged")


class LoadCalls:
    """Counts pipe.load_lora_weights calls (PEFT injections) while delegating to the real method."""

    def __init__(self, pipe, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        real = pipe.load_lora_weights

        def spy(weights, **kwargs):
            self.names.append(kwargs["adapter_name"])
            return real(weights, **kwargs)

        monkeypatch.setattr(pipe, "load_lora_weights", spy)


@pytest.mark.parametrize("apply_mode", ["fused", "unfused"])
def test_a_full_cache_recycles_the_evicted_adapters_modules(load, loras, tmp_path, monkeypatch, apply_mode) -> None:
    pipe = load(WAN22)
    manager = AdapterManager(pipe, residency="cache", max_resident=1, apply_mode=apply_mode)
    run_job(manager, [spec(1, loras["wan1"], 0.8, "both")])
    loads = LoadCalls(pipe, monkeypatch)

    recycled = run_job(manager, [spec(2, loras["wan2"], 0.6, "both")])
    assert manager.last_apply_stats.recycled == ("lora_2",) and loads.names == []
    assert manager.resident_adapters == ["lora_2"]
    assert pipe.get_list_adapters() == {"transformer": ["lora_2"], "transformer_2": ["lora_2"]}
    # Bitwise what injecting it anew gives.
    fresh = AdapterManager(load(WAN22), apply_mode=apply_mode)
    assert_same(recycled, run_job(fresh, [spec(2, loras["wan2"], 0.6, "both")]))

    # Another layout (rank 8, other experts) cannot take the slot: loaded normally, and still right.
    wide = write_lora(tmp_path / "rank8.safetensors", seed=5, rank=8)
    run_job(manager, [spec(3, wide, 0.5, "both")])
    assert manager.last_apply_stats.recycled == () and loads.names == ["lora_3", "lora_3"]
    run_job(manager, [spec(4, loras["wan4"], 0.5, "high")])
    assert manager.last_apply_stats.recycled == () and loads.names[-1] == "lora_4"


def test_no_recycling_while_the_cache_has_room_or_for_text_encoder_loras(load, loras, monkeypatch) -> None:
    wan = load(WAN22)
    roomy = AdapterManager(wan, residency="cache", max_resident=8)
    run_job(roomy, [spec(1, loras["wan1"])])
    run_job(roomy, [spec(2, loras["wan2"])])
    assert roomy.last_apply_stats.recycled == () and roomy.resident_adapters == ["lora_1", "lora_2"]

    flux = load(FLUX)
    full = AdapterManager(flux, residency="cache", max_resident=1)
    run_job(full, [spec(1, loras["flux_te"])])
    run_job(full, [spec(2, loras["flux_te"])])
    assert full.last_apply_stats.recycled == ()  # its keys reach the text encoder too: injected normally
    assert flux.get_list_adapters() == {"transformer": ["lora_2"], "text_encoder": ["lora_2"]}


# --- bounded pristine backups ----------------------------------------------------------------------------------


def test_a_merge_past_the_backup_bound_runs_unfused_with_the_same_output(load, loras, tmp_path) -> None:
    few = write_lora(
        tmp_path / "few.safetensors", seed=7, targets={"blocks.0.attn1.to_q": (24, 24), "blocks.0.attn1.to_k": (24, 24)}
    )
    pipe = load()
    pristine = base_tensors(pipe)
    unfused = run_job(AdapterManager(pipe, apply_mode="unfused"), [spec(2, loras["wan2"])])
    few_bytes = 2 * (24 * 24 + 24) * 4  # two fp32 Linear layers: weight and bias
    manager = AdapterManager(pipe, fused_backup_bytes=few_bytes)
    run_job(manager, [spec(1, few)])
    assert (manager.last_apply_stats.merge, manager.pristine_backup_bytes) == ("merged", few_bytes)
    output = run_job(manager, [spec(2, loras["wan2"])])  # would back up every targeted layer
    stats = manager.last_apply_stats
    assert (stats.merge, stats.unfused_reason, stats.merged_layers) == ("unfused", "fused backup bound", 0)
    assert manager.pristine_backup_bytes == few_bytes
    assert not any(layer.merged for layer in lora_layers(pipe.transformer))
    np.testing.assert_allclose(output, unfused, atol=FUSED_TOLERANCE)
    run_job(manager, [spec(1, few)])  # within the bound (its layers are backed up already): merged again
    assert manager.last_apply_stats.merge == "merged"
    assert_pristine(pipe, pristine)
    with pytest.raises(ValueError, match="max_backup_bytes must be >= 0"):
        AdapterManager(pipe, fused_backup_bytes=-1)


def test_the_backup_falls_back_to_pageable_memory_where_pinning_fails(load, loras, caplog) -> None:
    from generation.runtime.adapters.fusing import FusedWeights

    pipe = load()
    pristine = base_tensors(pipe)
    manager = AdapterManager(pipe)
    # On this CPU-only machine pinning raises, as a CUDA worker's cudaHostAlloc does when pinned memory runs out.
    with pytest.raises(RuntimeError):
        torch.empty(1, pin_memory=True)
    manager._fused = FusedWeights(pin_memory=True, max_backup_bytes=2**40)
    run_job(manager, [spec(1, loras["wan1"])])
    assert manager.last_apply_stats.merge == "merged" and manager.pristine_backup_bytes > 0
    assert "Pinning host memory for the fused-LoRA backup failed" in caplog.text
    assert_pristine(pipe, pristine)


def test_a_file_whose_bytes_fail_their_hash_is_refused_and_nothing_stays_loaded(load, loras, tmp_path) -> None:
    import hashlib

    from generation.runtime.adapters import LoRAChecksumError

    manager = AdapterManager(load())
    good = loras["wan1"]
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    rotten = tmp_path / "rotten.safetensors"
    data = bytearray(good.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last tensor value: still parses, wrong weights
    rotten.write_bytes(bytes(data))
    with pytest.raises(LoRAChecksumError, match=f"'style_1' \\(lora_1\\): .* expected {digest}") as error:
        manager.apply(
            [AdapterSpec(lora_id=1, display_name="style_1", path=rotten, weight=1.0, expert="high", sha256=digest)]
        )
    assert error.value.spec.path == rotten
    assert manager.resident_adapters == [] and manager.host_tier.paths == []
    manager.apply([AdapterSpec(lora_id=1, display_name="style_1", path=good, weight=1.0, expert="high", sha256=digest)])
    assert manager.last_apply_stats.sources == {"lora_1": "file"}
    manager.reset()
