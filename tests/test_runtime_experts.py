"""A weight per expert on the demo Wan 2.2 A14B pipeline (CPU): a "both" LoRA with `weight_low` scales its copy in
`transformer_2` by that weight and its copy in `transformer` by `weight`, in both apply modes, and the manager's
fast path (scales set directly on the PEFT layers, or merged with them) is pinned to diffusers' public route,
`pipe.set_adapters(names, adapter_weights=[{"transformer": w, "transformer_2": w_low}])`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from generation.runtime.adapters import APPLY_MODES, AdapterManager, AdapterSpec
from generation.runtime.generate import run_pipeline
from generation.runtime.pipelines import PipelineRegistry
from tests.runtime_fixtures import RUN_ARGS, assert_differs, write_lora

WAN22 = "wan22-a14b-demo"
# Merged and per-step LoRA branches differ only by float rounding (fp32 on the CPU).
FUSED_TOLERANCE = 1e-5


@pytest.fixture
def load(demo_models: dict[str, Path]) -> Callable:
    return lambda: PipelineRegistry().get(WAN22, path=demo_models[WAN22], pipeline_class="WanPipeline")


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lora(tmp_path_factory.mktemp("experts") / "both.safetensors", seed=3)


def both(path: Path, weight: float, weight_low: float | None) -> AdapterSpec:
    return AdapterSpec(lora_id=1, display_name="pair", path=path, weight=weight, expert="both", weight_low=weight_low)


def expert_inputs(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One fixed input for a demo Wan transformer: latents of 2 frames of 8×8, a timestep, 6 text tokens."""
    config = transformer.config
    generator = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, config.in_channels, 2, 8, 8, generator=generator),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 6, config.text_dim, generator=generator),
    }


def expert_outputs(pipe) -> dict[str, torch.Tensor]:
    """What each expert computes on the same input, with whatever adapters are active."""
    outputs = {}
    with torch.no_grad():
        for name in ("transformer", "transformer_2"):
            module = getattr(pipe, name)
            outputs[name] = module(**expert_inputs(module), return_dict=False)[0]
    return outputs


def public_route(pipe, path: Path, weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """diffusers' own way: load into both experts, then per-component weights through `set_adapters`."""
    pipe.load_lora_weights(str(path), adapter_name="public", use_safetensors=True)
    pipe.load_lora_weights(str(path), adapter_name="public", use_safetensors=True, load_into_transformer_2=True)
    pipe.set_adapters(["public"], adapter_weights=[weights])
    return expert_outputs(pipe)


def generate(pipe):
    return run_pipeline(pipe, kind="video", on_step=lambda s, t: None, should_cancel=lambda: False, **RUN_ARGS)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, mode: str) -> None:
    if mode == "unfused":
        assert torch.equal(actual, expected)
    else:
        torch.testing.assert_close(actual, expected, rtol=0, atol=FUSED_TOLERANCE)


@pytest.mark.parametrize("mode", APPLY_MODES)
def test_weight_low_zero_changes_only_the_high_noise_expert(load, lora, mode) -> None:
    pipe = load()
    base = expert_outputs(pipe)
    manager = AdapterManager(pipe, residency="unload", apply_mode=mode)
    manager.apply([both(lora, 1.0, 0.0)])
    try:
        applied = expert_outputs(pipe)
    finally:
        manager.reset()
    assert (applied["transformer"] - base["transformer"]).abs().max() > 1e-4  # the high-noise expert has the LoRA
    assert_close(applied["transformer_2"], base["transformer_2"], mode)  # weight 0 in the low-noise expert
    assert expert_outputs(pipe)["transformer_2"].equal(base["transformer_2"])


@pytest.mark.parametrize("mode", APPLY_MODES)
@pytest.mark.parametrize(("weight", "weight_low"), [(1.0, 0.5), (0.3, 1.7), (1.2, None)])
def test_per_expert_weights_match_diffusers_set_adapters(load, lora, mode, weight, weight_low) -> None:
    pipe = load()
    manager = AdapterManager(pipe, residency="unload", apply_mode=mode)
    manager.apply([both(lora, weight, weight_low)])
    try:
        fast = expert_outputs(pipe)
        fast_video = generate(pipe)
    finally:
        manager.reset()

    reference = load()
    expected = public_route(
        reference, lora, {"transformer": weight, "transformer_2": weight if weight_low is None else weight_low}
    )
    for name in ("transformer", "transformer_2"):
        assert_close(fast[name], expected[name], mode)
    np.testing.assert_allclose(fast_video, generate(reference), rtol=0, atol=0 if mode == "unfused" else 1e-4)


@pytest.mark.parametrize("mode", APPLY_MODES)
def test_a_weight_changes_exactly_the_expert_it_names(load, lora, mode) -> None:
    pipe = load()
    manager = AdapterManager(pipe, residency="cache", apply_mode=mode)

    def run(weight: float, weight_low: float | None) -> dict[str, torch.Tensor]:
        manager.apply([both(lora, weight, weight_low)])
        try:
            return expert_outputs(pipe)
        finally:
            manager.reset(keep_merged=True)  # a changed weight must not reuse the previous merge

    same = run(1.0, None)
    other_low = run(1.0, 0.4)
    other_high = run(0.4, 1.0)
    assert_close(other_low["transformer"], same["transformer"], mode)
    assert (other_low["transformer_2"] - same["transformer_2"]).abs().max() > 1e-4
    assert_close(other_high["transformer_2"], same["transformer_2"], mode)
    assert (other_high["transformer"] - same["transformer"]).abs().max() > 1e-4
    assert_differs(run_video(manager, both(lora, 1.0, 0.4)), run_video(manager, both(lora, 1.0, None)))


def run_video(manager: AdapterManager, spec: AdapterSpec) -> np.ndarray:
    manager.apply([spec])
    try:
        return generate(manager.pipe)
    finally:
        manager.reset()


def test_weight_low_needs_expert_both(load, lora) -> None:
    manager = AdapterManager(load(), residency="unload")
    high = AdapterSpec(lora_id=1, display_name="pair", path=lora, weight=1.0, expert="high", weight_low=0.5)
    with pytest.raises(ValueError, match="weight_low is for expert both"):
        manager.apply([high])
    assert manager.active_adapters == []


def test_describe_names_both_weights(lora) -> None:
    assert both(lora, 1.0, 0.5).describe() == "'pair' as lora_1, weight 1 (high) / 0.5 (low), expert both"
    assert both(lora, 1.0, None).describe() == "'pair' as lora_1, weight 1, expert both"
