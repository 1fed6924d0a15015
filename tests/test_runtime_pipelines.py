"""Demo models, the pipeline registry, and run_pipeline's progress, cancellation and determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from generation.runtime.demo_models import DEMO_MANIFEST, build_demo_models
from generation.runtime.generate import GenerationCancelled, run_pipeline
from generation.runtime.pipelines import PipelineRegistry, expert_modules
from tests.runtime_fixtures import RUN_ARGS, assert_differs, assert_same


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
