"""LoRA application on the demo pipelines: expert routing, weights, cleanup after jobs, residency="cache", each in
both apply modes (fused and unfused)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from peft.tuners.tuners_utils import BaseTunerLayer

from generation.runtime.adapters import APPLY_MODES, AdapterManager, AdapterSpec, LoRALoadError, adapter_name
from generation.runtime.generate import GenerationCancelled, run_pipeline
from generation.runtime.pipelines import PipelineRegistry, expert_modules
from tests.runtime_fixtures import (
    FLUX_DEMO_LORA_TARGETS,
    RUN_ARGS,
    assert_differs,
    assert_same,
    write_corrupt_lora,
    write_lora,
    write_mismatched_lora,
)

WAN22 = "wan22-a14b-demo"


@pytest.fixture
def load(demo_models: dict[str, Path]) -> Callable:  # noqa: F811
    """load(key) -> a freshly loaded pipeline (loading a demo model takes milliseconds)."""
    pipeline_classes = {"wan22-a14b-demo": "WanPipeline", "wan-ti2v-demo": "WanPipeline", "flux-demo": "FluxPipeline"}

    def load(key: str = WAN22):
        return PipelineRegistry().get(key, path=demo_models[key], pipeline_class=pipeline_classes[key])

    return load


@pytest.fixture(params=APPLY_MODES)
def make_manager(request: pytest.FixtureRequest) -> Callable[..., AdapterManager]:
    """make_manager(pipe, **options): every test here runs once per apply mode, and with residency "unload" unless
    it names one (the tests were written against unloading, which lets them check the wrappers are gone)."""

    def make(pipe, **options) -> AdapterManager:
        return AdapterManager(pipe, **{"residency": "unload", "apply_mode": request.param, **options})

    return make


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    files = {f"wan{seed}": write_lora(folder / f"wan{seed}.safetensors", seed=seed) for seed in range(1, 7)}
    files["flux"] = write_lora(folder / "flux.safetensors", seed=11, targets=FLUX_DEMO_LORA_TARGETS)
    files["text_encoder_only"] = write_lora(folder / "te.safetensors", seed=12, component="text_encoder")
    files["corrupt"] = write_corrupt_lora(folder / "corrupt.safetensors")
    files["mismatched"] = write_mismatched_lora(folder / "mismatched.safetensors")
    return files


def spec(lora_id: int, path: Path, weight: float = 1.0, expert: str = "high") -> AdapterSpec:
    return AdapterSpec(lora_id=lora_id, display_name=f"style_{lora_id}", path=path, weight=weight, expert=expert)


def generate(pipe, **overrides) -> np.ndarray:
    kind = "image" if type(pipe).__name__ == "FluxPipeline" else "video"
    arguments = {**RUN_ARGS, **overrides}
    return run_pipeline(pipe, kind=kind, on_step=lambda step, total: None, should_cancel=lambda: False, **arguments)


def run_job(manager: AdapterManager, specs: list[AdapterSpec]) -> np.ndarray:
    """What the worker does per job: apply, generate, reset whatever happens."""
    try:
        manager.apply(specs)
        return generate(manager.pipe)
    finally:
        manager.reset()


def lora_layer_count(pipe) -> int:
    experts = expert_modules(pipe).values()
    return sum(isinstance(module, BaseTunerLayer) for expert in experts for module in expert.modules())


def assert_base_model(pipe, base: np.ndarray) -> None:
    assert pipe.get_list_adapters() == {}
    assert lora_layer_count(pipe) == 0
    assert_same(generate(pipe), base)


@pytest.fixture
def wan(load):
    """(pipeline, its base output) for the two-expert demo."""
    pipe = load(WAN22)
    return pipe, generate(pipe)


def test_adapter_name_and_description() -> None:
    assert adapter_name(12) == "lora_12"
    anime = AdapterSpec(lora_id=12, display_name="anime_style", path=Path("x"), weight=0.8, expert="high")
    assert anime.describe() == "'anime_style' as lora_12, weight 0.8, expert high"


def test_one_lora_changes_the_output_and_reset_restores_the_base_model(wan, loras, caplog, make_manager) -> None:
    pipe, base = wan
    manager = make_manager(pipe)
    caplog.set_level("INFO", logger="generation.runtime.adapters")

    manager.apply([spec(1, loras["wan1"], 0.8)])
    assert manager.active_adapters == ["lora_1"]
    assert_differs(generate(pipe), base)
    manager.reset()

    assert "'style_1' as lora_1, weight 0.8, expert high" in caplog.text
    assert manager.active_adapters == [] and manager.resident_adapters == []
    assert_base_model(pipe, base)


@pytest.mark.parametrize(
    ("expert", "expected"),
    [
        ("high", {"transformer": ["lora_1"]}),
        ("low", {"transformer_2": ["lora_1"]}),
        ("both", {"transformer": ["lora_1"], "transformer_2": ["lora_1"]}),
    ],
)
def test_expert_routing(wan, loras, expert: str, expected: dict, make_manager) -> None:
    pipe, base = wan
    manager = make_manager(pipe)
    manager.apply([spec(1, loras["wan1"], expert=expert)])
    # Only the targeted expert(s) hold the adapter (a two-step run visits both experts, so each one matters).
    assert pipe.get_list_adapters() == expected
    assert_differs(generate(pipe), base)
    manager.reset()
    assert_base_model(pipe, base)


def test_high_low_and_both_give_different_results(wan, loras, make_manager) -> None:
    pipe, _ = wan
    manager = make_manager(pipe)
    outputs = {expert: run_job(manager, [spec(1, loras["wan1"], expert=expert)]) for expert in ("high", "low", "both")}
    assert_differs(outputs["high"], outputs["low"])
    assert_differs(outputs["high"], outputs["both"])
    assert_differs(outputs["low"], outputs["both"])


def test_five_loras_with_distinct_weights(wan, loras, make_manager) -> None:
    pipe, base = wan
    manager = make_manager(pipe)
    weights = [0.2, 0.4, 0.6, 0.8, 1.0]
    experts = ["high", "low", "both", "high", "low"]
    specs = [
        spec(i, loras[f"wan{i}"], weight, expert)
        for i, weight, expert in zip(range(1, 6), weights, experts, strict=True)
    ]

    manager.apply(specs)
    assert manager.active_adapters == [f"lora_{i}" for i in range(1, 6)]
    assert sorted(pipe.get_list_adapters()["transformer"]) == ["lora_1", "lora_3", "lora_4"]
    assert sorted(pipe.get_list_adapters()["transformer_2"]) == ["lora_2", "lora_3", "lora_5"]
    # Each adapter's scale in a LoRA layer is its weight (lora_alpha defaults to the rank, so alpha / r = 1).
    to_q_high, to_q_low = pipe.transformer.blocks[0].attn1.to_q, pipe.transformer_2.blocks[0].attn1.to_q
    assert to_q_high.scaling == {"lora_1": 0.2, "lora_3": 0.6, "lora_4": 0.8}
    assert to_q_low.scaling == {"lora_2": 0.4, "lora_3": 0.6, "lora_5": 1.0}
    combined = generate(pipe)
    manager.reset()

    assert_differs(combined, base)
    assert_differs(combined, run_job(manager, specs[:1]))
    assert_base_model(pipe, base)


def test_weight_zero_gives_the_base_output(wan, loras, make_manager) -> None:
    pipe, base = wan
    output = run_job(make_manager(pipe), [spec(1, loras["wan1"], 0.0, "both")])
    np.testing.assert_allclose(output, base, rtol=0, atol=1e-6)


def test_different_weights_give_different_outputs(wan, loras, make_manager) -> None:
    pipe, _ = wan
    manager = make_manager(pipe)
    assert_differs(run_job(manager, [spec(1, loras["wan1"], 0.5)]), run_job(manager, [spec(1, loras["wan1"], 1.0)]))


def test_cancelled_job_leaves_the_base_model(wan, loras, make_manager) -> None:
    pipe, base = wan
    manager = make_manager(pipe)
    with pytest.raises(GenerationCancelled):
        try:
            manager.apply([spec(1, loras["wan1"], expert="both")])
            run_pipeline(pipe, kind="video", on_step=lambda s, t: None, should_cancel=_after_first_check(), **RUN_ARGS)
        finally:
            manager.reset()
    assert_base_model(pipe, base)


def _after_first_check() -> Callable[[], bool]:
    """should_cancel that says no before the run and yes after its first step."""
    answers = iter([False, True])
    return lambda: next(answers, True)


@pytest.mark.parametrize("bad", ["corrupt", "mismatched"])
@pytest.mark.parametrize("residency", ["unload", "cache"])
def test_a_broken_lora_fails_clearly_and_leaves_nothing_active(
    wan, loras, bad: str, residency: str, make_manager
) -> None:
    pipe, base = wan
    manager = make_manager(pipe, residency=residency)
    broken = AdapterSpec(lora_id=12, display_name="anime_style", path=loras[bad], weight=0.8, expert="high")

    with pytest.raises(LoRALoadError) as failure:
        manager.apply([spec(1, loras["wan1"], expert="both"), broken])

    assert str(failure.value).startswith(
        "LoRA 'anime_style' (lora_12) could not be loaded into the high-noise expert: "
    )
    assert manager.active_adapters == []
    assert all("lora_12" not in names for names in pipe.get_list_adapters().values())
    if residency == "unload":
        assert_base_model(pipe, base)
    else:
        # The good LoRA may stay resident (inactive); the output must still be the base model's.
        assert manager.resident_adapters == ["lora_1"]
        assert_same(generate(pipe), base)


@pytest.mark.parametrize(
    ("lora", "reason"),
    [
        # Module names that do not exist in Wan: PEFT refuses to inject anything.
        ("flux", "not found in the base model"),
        # No key for the transformer at all: diffusers would only warn and load nothing.
        ("text_encoder_only", "no LoRA weights for transformer"),
    ],
)
def test_a_lora_for_another_model_is_rejected(wan, loras, lora: str, reason: str, make_manager) -> None:
    pipe, base = wan
    with pytest.raises(LoRALoadError, match=reason):
        make_manager(pipe).apply([spec(3, loras[lora])])
    assert_base_model(pipe, base)


def test_unknown_or_missing_experts_are_rejected(load, loras, make_manager) -> None:
    single = load("wan-ti2v-demo")
    manager = make_manager(single)
    with pytest.raises(ValueError, match="targets the low expert"):
        manager.apply([spec(1, loras["wan1"], expert="low")])
    with pytest.raises(ValueError, match="expert must be one of"):
        manager.apply([spec(1, loras["wan1"], expert="middle")])
    with pytest.raises(ValueError, match="listed twice"):
        manager.apply([spec(1, loras["wan1"]), spec(1, loras["wan2"])])
    assert single.get_list_adapters() == {}


def test_apply_without_reset_is_refused(wan, loras, make_manager) -> None:
    manager = make_manager(wan[0])
    manager.apply([spec(1, loras["wan1"])])
    with pytest.raises(RuntimeError, match="reset"):
        manager.apply([spec(2, loras["wan2"])])


def test_single_expert_wan_and_flux(load, loras, make_manager) -> None:
    for key, lora in (("wan-ti2v-demo", loras["wan1"]), ("flux-demo", loras["flux"])):
        pipe = load(key)
        base = generate(pipe)
        manager = make_manager(pipe)
        assert_differs(run_job(manager, [spec(1, lora)]), base)
        assert pipe.get_list_adapters() == {}
        assert_same(generate(pipe), base)


class LoadSpy:
    """Counts pipe.load_lora_weights calls while delegating to the real method."""

    def __init__(self, pipe, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real = pipe.load_lora_weights

        def spy(path, **kwargs):
            self.calls.append(kwargs["adapter_name"])
            return real(path, **kwargs)

        monkeypatch.setattr(pipe, "load_lora_weights", spy)


def test_cache_residency_reuses_adapters_and_matches_a_fresh_pipeline(load, loras, monkeypatch, make_manager) -> None:
    pipe = load(WAN22)
    base = generate(pipe)
    manager = make_manager(pipe, residency="cache")
    loads = LoadSpy(pipe, monkeypatch)
    first_job = [spec(1, loras["wan1"], 0.7, "both"), spec(2, loras["wan2"], 0.5, "low")]
    second_job = [spec(3, loras["wan3"], 0.9, "high"), spec(1, loras["wan1"], 0.3, "both")]

    run_job(manager, first_job)
    assert manager.resident_adapters == ["lora_1", "lora_2"] and manager.active_adapters == []
    # Resident but inactive adapters do not change a LoRA-free job at all.
    assert_same(generate(pipe), base)
    loads.calls.clear()
    reused = run_job(manager, second_job)

    assert loads.calls == ["lora_3"]  # lora_1 was reused, not loaded again
    fresh_pipe = load(WAN22)
    fresh = run_job(make_manager(fresh_pipe), second_job)
    assert_same(reused, fresh)  # bitwise: inactive adapters and load order leave no trace


def test_cache_residency_evicts_least_recently_used_beyond_the_count(wan, loras, monkeypatch, make_manager) -> None:
    pipe, base = wan
    manager = make_manager(pipe, residency="cache", max_resident=2)
    for lora_id in (1, 2, 1, 3):  # lora_1 used again after lora_2, so lora_2 is the least recently used
        run_job(manager, [spec(lora_id, loras[f"wan{lora_id}"])])
    assert manager.resident_adapters == ["lora_1", "lora_3"]
    assert sorted(pipe.get_list_adapters()["transformer"]) == ["lora_1", "lora_3"]
    assert_same(generate(pipe), base)


def test_cache_residency_evicts_beyond_the_byte_budget(wan, loras, make_manager) -> None:
    pipe, base = wan
    manager = make_manager(pipe, residency="cache", max_resident_bytes=1)
    run_job(manager, [spec(1, loras["wan1"])])
    # Nothing fits in one byte: the adapter is dropped after the job and the wrappers are unloaded too.
    assert manager.resident_adapters == []
    assert_base_model(pipe, base)


def test_cache_residency_reloads_when_the_file_or_expert_changes(load, loras, monkeypatch, make_manager) -> None:
    pipe = load(WAN22)
    manager = make_manager(pipe, residency="cache")
    loads = LoadSpy(pipe, monkeypatch)
    run_job(manager, [spec(1, loras["wan1"], expert="high")])
    run_job(manager, [spec(1, loras["wan1"], expert="low")])  # same file, other expert
    new_version = run_job(manager, [spec(1, loras["wan2"], expert="low")])  # new file version
    assert loads.calls == ["lora_1", "lora_1", "lora_1"]
    assert pipe.get_list_adapters() == {"transformer_2": ["lora_1"]}
    assert_same(new_version, run_job(make_manager(load(WAN22)), [spec(1, loras["wan2"], expert="low")]))


def test_a_new_manager_takes_over_a_pipeline_with_leftover_adapters(wan, loras, make_manager) -> None:
    pipe, base = wan
    abandoned = make_manager(pipe, residency="cache")
    abandoned.apply([spec(1, loras["wan1"])])  # never reset: lora_1 stays active (and merged, when fused)
    manager = make_manager(pipe, residency="cache")
    if abandoned.apply_mode == "unfused":
        assert_base_model(pipe, base)
    else:
        # The new manager has no pristine copy of the abandoned merge: PEFT's unmerge subtracts, so only close.
        assert pipe.get_list_adapters() == {} and lora_layer_count(pipe) == 0
        np.testing.assert_allclose(generate(pipe), base, rtol=0, atol=1e-5)
    assert_differs(run_job(manager, [spec(1, loras["wan1"])]), base)  # and the name can be loaded again
