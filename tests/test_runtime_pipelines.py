"""Demo models, the pipeline registry (placement, eviction), run_pipeline's progress, cancellation and determinism."""

from __future__ import annotations

import json
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from generation.model_registry import model_registry
from generation.runtime import memory_plan
from generation.runtime.adapters import AdapterManager, AdapterSpec
from generation.runtime.demo_models import DEMO_MANIFEST, build_demo_models
from generation.runtime.generate import GenerationCancelled, run_pipeline
from generation.runtime.memory_plan import Plan
from generation.runtime.pipelines import PipelineRegistry, expert_modules, pipeline_dtypes, weight_nbytes
from tests.runtime_fixtures import RUN_ARGS, assert_differs, assert_same, write_lora


@pytest.fixture(scope="module")
def registry(demo_models: dict[str, Path]):
    registry = PipelineRegistry()

    def get(key: str):
        manifest = json.loads((demo_models[key] / DEMO_MANIFEST).read_text())
        return registry.get(key, path=demo_models[key], pipeline_class=manifest["pipeline_class"])

    get.registry = registry
    return get


def generate(pipe, kind: str = "video", on_step=lambda step, total: None, should_cancel=lambda: False, **overrides):
    return run_pipeline(pipe, kind=kind, on_step=on_step, should_cancel=should_cancel, **{**RUN_ARGS, **overrides})


def test_demo_models_have_the_shapes_the_lora_library_detects(demo_models: dict[str, Path]) -> None:
    manifests = {key: json.loads((path / DEMO_MANIFEST).read_text()) for key, path in demo_models.items()}
    assert {key: (m["pipeline_class"], m["kind"], m["lora_family"], m["experts"]) for key, m in manifests.items()} == {
        "wan22-a14b-demo": ("WanPipeline", "video", "wan-demo", ["high", "low"]),
        "wan-ti2v-demo": ("WanPipeline", "video", "wan-demo", ["high"]),
        "wan22-i2v-a14b-demo": ("WanImageToVideoPipeline", "video", "wan-demo", ["high", "low"]),
        "flux-demo": ("FluxPipeline", "image", "flux-demo", ["high"]),
    }
    for key, manifest in manifests.items():
        for transformer in ("transformer", "transformer_2"):
            config_path = demo_models[key] / transformer / "config.json"
            if config_path.exists():
                config = json.loads(config_path.read_text())
                hidden = config["num_attention_heads"] * config["attention_head_dim"]
                assert hidden == manifest["hidden_size"] == {"wan-demo": 24, "flux-demo": 32}[manifest["lora_family"]]
    wan_config = json.loads((demo_models["wan22-a14b-demo"] / "transformer" / "config.json").read_text())
    assert wan_config["ffn_dim"] == 32
    index = json.loads((demo_models["wan22-a14b-demo"] / "model_index.json").read_text())
    assert index["boundary_ratio"] == 0.875
    assert (demo_models["wan-ti2v-demo"] / "transformer_2").exists() is False
    # Wan 2.2 I2V-A14B: image latents concatenated to the noise, no CLIP image encoder.
    i2v_config = json.loads((demo_models["wan22-i2v-a14b-demo"] / "transformer" / "config.json").read_text())
    assert (i2v_config["in_channels"], i2v_config["image_dim"]) == (36, None)
    assert not (demo_models["wan22-i2v-a14b-demo"] / "image_encoder").exists()


def test_build_is_idempotent_unless_forced(tmp_path: Path) -> None:
    built = build_demo_models(tmp_path)
    manifest = built["flux-demo"] / DEMO_MANIFEST
    first_mtime = manifest.stat().st_mtime_ns

    assert build_demo_models(tmp_path) == built
    assert manifest.stat().st_mtime_ns == first_mtime
    build_demo_models(tmp_path, force=True)
    assert manifest.stat().st_mtime_ns != first_mtime
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(built)  # no staging folders left


def test_registry_loads_once_and_only_allowed_classes(registry, demo_models) -> None:
    pipe = registry("wan22-a14b-demo")
    assert registry("wan22-a14b-demo") is pipe
    assert pipe.transformer.dtype == torch.float32 and pipe.device.type == "cpu"
    with pytest.raises(ValueError, match="Unsupported pipeline class"):
        registry.registry.get("x", path=demo_models["flux-demo"], pipeline_class="diffusers.DiffusionPipeline")
    assert "x" not in registry.registry.loaded_keys()


def test_expert_modules(registry) -> None:
    two = registry("wan22-a14b-demo")
    assert expert_modules(two) == {"high": two.transformer, "low": two.transformer_2}
    one = registry("wan-ti2v-demo")
    assert expert_modules(one) == {"high": one.transformer}


def test_progress_is_reported_after_every_step(registry) -> None:
    steps = []
    frames = generate(registry("wan22-a14b-demo"), on_step=lambda step, total: steps.append((step, total)), steps=3)
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_same_seed_same_output_other_seed_other_output(registry) -> None:
    pipe = registry("wan22-a14b-demo")
    assert_same(generate(pipe), generate(pipe))
    assert_differs(generate(pipe), generate(pipe, seed=RUN_ARGS["seed"] + 1))


def test_cancellation_stops_between_steps_and_the_pipeline_stays_usable(registry) -> None:
    pipe = registry("wan22-a14b-demo")
    expected = generate(pipe)
    steps = []
    answers = iter([False, True])  # before the run: go on; after step 1: stop
    with pytest.raises(GenerationCancelled, match="after step 1 of 2"):
        generate(pipe, on_step=lambda step, total: steps.append(step), should_cancel=lambda: next(answers))
    assert steps == [1]
    assert_same(generate(pipe), expected)


def test_cancelled_before_start_runs_nothing(registry) -> None:
    steps = []
    with pytest.raises(GenerationCancelled, match="before the first step"):
        generate(registry("wan22-a14b-demo"), on_step=lambda step, _: steps.append(step), should_cancel=lambda: True)
    assert steps == []


def test_guidance_2_drives_the_low_noise_expert_only_on_two_expert_models(registry) -> None:
    two = registry("wan22-a14b-demo")
    assert_differs(generate(two, guidance_2=1.5), generate(two, guidance_2=6.0))
    one = registry("wan-ti2v-demo")
    # Single-expert models ignore guidance_2 rather than failing (WanPipeline would raise if it were passed).
    assert_same(generate(one, guidance_2=1.5), generate(one, guidance_2=6.0))


def test_image_kind_returns_one_image(registry) -> None:
    image = generate(registry("flux-demo"), kind="image")
    assert image.shape == (32, 32, 3) and image.dtype == np.float32


def test_unknown_kind_is_rejected(registry) -> None:
    with pytest.raises(ValueError, match="kind must be"):
        generate(registry("flux-demo"), kind="audio")


# --- memory plan placement and eviction ---------------------------------------------------------------------


def demo_plan(key: str, device_bytes: int | None, **overrides) -> Plan:
    return memory_plan.plan(replace(model_registry()[key], **overrides), device_bytes)


def get_planned(registry: PipelineRegistry, demo_models, key: str, plan: Plan):
    manifest = json.loads((demo_models[key] / DEMO_MANIFEST).read_text())
    return registry.get(key, path=demo_models[key], pipeline_class=manifest["pipeline_class"], plan=plan)


def test_two_models_that_do_not_fit_together_alternate_by_eviction(demo_models, caplog) -> None:
    keys = ("wan22-a14b-demo", "wan-ti2v-demo")
    # The same largest job on both (32x32, 9 frames), so their activation reserves are equal and only the weights
    # differ: then a device can hold either model's peak but not that plus the other's weights.
    same_job = {"capabilities": replace(model_registry()["wan-ti2v-demo"].capabilities, resolutions=((32, 32),))}
    alone = [demo_plan(key, None, **same_job) for key in keys]
    device_bytes = min(alone[0].weight_bytes + alone[1].peaks["gpu"], alone[1].weight_bytes + alone[0].peaks["gpu"]) - 1
    assert device_bytes >= max(p.peaks["gpu"] for p in alone)
    plans = {key: demo_plan(key, device_bytes, **same_job) for key in keys}
    assert {p.placement for p in plans.values()} == {"gpu"}
    evicted = []
    registry = PipelineRegistry(on_evict=evicted.append)
    first = weakref.ref(get_planned(registry, demo_models, keys[0], plans[keys[0]]))
    for key in [keys[1], keys[0], keys[1]]:
        pipe = get_planned(registry, demo_models, key, plans[key])
        assert generate(pipe).shape == (5, 32, 32, 3)
        assert registry.loaded_keys() == [key]
        del pipe
    assert evicted == [keys[0], keys[1], keys[0]]
    assert first() is None  # really freed, not only forgotten
    assert f"Evicting pipeline {keys[0]}: {keys[1]} needs" in caplog.text
    assert f"Dropped pipeline {keys[0]} (gpu): " in caplog.text and "of weights freed" in caplog.text


def test_models_that_fit_together_stay_loaded_least_recently_used_first(demo_models) -> None:
    evicted = []
    registry = PipelineRegistry(on_evict=evicted.append)
    for key in ("wan-ti2v-demo", "flux-demo", "wan-ti2v-demo"):
        get_planned(registry, demo_models, key, demo_plan(key, 100 * memory_plan.GiB))
    assert registry.loaded_keys() == ["flux-demo", "wan-ti2v-demo"] and evicted == []


def test_drop_returns_the_bytes_freed_and_tells_on_evict(demo_models) -> None:
    evicted = []
    registry = PipelineRegistry(on_evict=evicted.append)
    pipe = get_planned(registry, demo_models, "flux-demo", demo_plan("flux-demo", None))
    expected = weight_nbytes(pipe)
    del pipe
    assert registry.drop("flux-demo") == expected > 0
    assert registry.drop("flux-demo") == 0 and evicted == ["flux-demo"] and registry.loaded_keys() == []


# model_offload and sequential are left out: diffusers re-adds model-offload hooks after a LoRA load with the default
# device, which must be an accelerator, and accelerate's leaf offload cannot onload to the CPU it offloads to.
# With fp8 storage the LoRA layers are kept in the compute dtype and applied unfused even with apply_mode="fused".
CPU_PLACEMENTS = [("gpu", ""), ("group_offload", ""), ("gpu", "fp8"), ("group_offload", "fp8")]


@pytest.mark.parametrize("apply_mode", ["fused", "unfused"])
@pytest.mark.parametrize(("placement", "storage_dtype"), CPU_PLACEMENTS)
def test_loras_apply_and_reset_under_each_placement_a_cpu_allows(
    demo_models, tmp_path, placement, storage_dtype, apply_mode
) -> None:
    key = "wan22-a14b-demo"
    plan = demo_plan(key, 100 * memory_plan.GiB, placement=placement, storage_dtype=storage_dtype)
    pipe = get_planned(PipelineRegistry(), demo_models, key, plan)
    reference = get_planned(PipelineRegistry(), demo_models, key, demo_plan(key, None, storage_dtype=storage_dtype))
    lora = AdapterSpec(
        lora_id=1, display_name="fox", weight=1.0, expert="both", path=write_lora(tmp_path / "fox.safetensors", seed=1)
    )
    base = generate(pipe)
    np.testing.assert_allclose(base, generate(reference), atol=1e-5)
    for target in (pipe, reference):
        manager = AdapterManager(target, apply_mode=apply_mode)
        manager.apply([lora])
        with_lora = generate(target)
        manager.reset()
        if target is pipe:
            pipe_with_lora = with_lora
        assert_same(generate(target), generate(target))
    assert_differs(pipe_with_lora, base)
    np.testing.assert_allclose(pipe_with_lora, with_lora, atol=1e-5)  # the same LoRA effect as unoffloaded
    assert_same(generate(pipe), base)  # reset restores the base model


@pytest.mark.parametrize("placement", ["gpu", "group_offload"])
def test_fp8_storage_keeps_transformer_weights_in_float8_and_still_generates(demo_models, placement) -> None:
    key = "wan22-a14b-demo"
    fp8 = get_planned(
        PipelineRegistry(),
        demo_models,
        key,
        demo_plan(key, 100 * memory_plan.GiB, placement=placement, storage_dtype="fp8"),
    )
    for transformer in (fp8.transformer, fp8.transformer_2):
        assert transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
        assert transformer.blocks[0].norm2.weight.dtype == torch.float32  # norms skipped, as diffusers' default
    assert fp8.text_encoder.dtype == torch.float32
    full = generate(get_planned(PipelineRegistry(), demo_models, key, demo_plan(key, None)))
    np.testing.assert_allclose(generate(fp8), full, atol=0.05)  # float8 weights round: close to full precision


def test_model_offload_generates_what_the_unoffloaded_pipeline_does(demo_models) -> None:
    key = "wan22-a14b-demo"
    offloaded = get_planned(
        PipelineRegistry(), demo_models, key, demo_plan(key, 100 * memory_plan.GiB, placement="model_offload")
    )
    reference = get_planned(PipelineRegistry(), demo_models, key, demo_plan(key, None))
    np.testing.assert_allclose(generate(offloaded), generate(reference), atol=1e-5)


def test_sequential_placement_needs_cuda(demo_models) -> None:
    with pytest.raises(ValueError, match="sequential placement needs a CUDA device"):
        get_planned(PipelineRegistry(), demo_models, "flux-demo", demo_plan("flux-demo", None, placement="sequential"))


def test_pipeline_dtypes_follow_the_plan_on_cuda_only() -> None:
    plan = demo_plan("wan22-a14b-demo", None)
    assert pipeline_dtypes(plan, torch.device("cpu")) == torch.float32
    assert pipeline_dtypes(plan, torch.device("cuda")) == {
        "default": torch.bfloat16,
        "transformer": torch.bfloat16,
        "transformer_2": torch.bfloat16,
        "text_encoder": torch.bfloat16,
        "vae": torch.float32,
    }


def test_fp8_lora_layers_hold_the_files_values_in_the_compute_dtype(demo_models, tmp_path) -> None:
    """PEFT creates them in float8 (rounded values, no CPU kernel): after a load from the file, from the host tier and
    into a recycled slot alike, they are float32 (the CPU's compute dtype) with exactly the file's values, and
    apply_mode="fused" applies them unfused."""
    from safetensors.torch import load_file

    key = "wan22-a14b-demo"
    pipe = get_planned(PipelineRegistry(), demo_models, key, demo_plan(key, None, storage_dtype="fp8"))
    manager = AdapterManager(pipe, apply_mode="fused", max_resident=1)
    files = {seed: write_lora(tmp_path / f"lora{seed}.safetensors", seed=seed) for seed in (1, 2)}
    specs = {
        seed: AdapterSpec(lora_id=seed, display_name=f"l{seed}", weight=1.0, expert="both", path=path)
        for seed, path in files.items()
    }

    def assert_holds_file_values(seed: int) -> None:
        expected = load_file(files[seed])
        for transformer in (pipe.transformer, pipe.transformer_2):
            layer = transformer.blocks[1].ffn.net[2]
            for container in ("lora_A", "lora_B"):
                weight = getattr(layer, container)[f"lora_{seed}"].weight
                assert weight.dtype == torch.float32
                assert torch.equal(weight, expected[f"transformer.blocks.1.ffn.net.2.{container}.weight"])
            assert layer.base_layer.weight.dtype == torch.float8_e4m3fn and not layer.merged

    base = generate(pipe)
    outputs = {}
    for seed, expected_source, recycled in [(1, "file", ()), (2, "file", ("lora_2",)), (1, "host_tier", ("lora_1",))]:
        manager.apply([specs[seed]])
        stats = manager.last_apply_stats
        assert (stats.sources, stats.recycled) == ({f"lora_{seed}": expected_source}, recycled)
        assert (stats.merge, stats.unfused_reason, manager.pristine_backup_bytes) == ("unfused", "fp8 storage", 0)
        assert_holds_file_values(seed)
        outputs.setdefault(seed, []).append(generate(pipe))
        manager.reset()
    assert_same(*outputs[1])  # the host-tier reload into a recycled slot computes what the first load did
    assert_differs(outputs[1][0], base)
    assert_same(generate(pipe), base)
