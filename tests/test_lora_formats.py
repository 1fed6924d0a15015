"""Every LoRA key format, loaded through a real demo WanPipeline (two experts): exactly the targeted expert changes,
and the coverage the ingest task stores names exactly the layers diffusers wraps. Plus the coverage text and the
refusal of files diffusers would load nothing of."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402

from generation.runtime.adapters import AdapterManager, AdapterSpec  # noqa: E402
from generation.runtime.demo_models import DEMO_MODELS  # noqa: E402
from generation.runtime.lora_keys import CoverageError, lora_coverage  # noqa: E402
from loras.models import LoRA, Status  # noqa: E402
from loras.safetensors_header import read_header_from_path  # noqa: E402
from tests.ingest import ingest_ready  # noqa: E402
from tests.lora_files import (  # noqa: E402
    WAN_MODULES,
    random_tensor,
    write_kohya_flux_lora_with_text_encoder,
    write_lora,
    write_tensors,
)

# key format -> write_lora arguments; kohya/musubi files always carry `.alpha` (diffusers' converter needs it).
FORMATS = {
    "diffusers": {"key_format": "diffusers"},
    "peft": {"key_format": "peft"},
    "kohya": {"key_format": "kohya", "alpha": 2.0},
    "comfyui": {"key_format": "comfyui"},
    "lightx2v": {"key_format": "lightx2v", "alpha": 4.0},
    "native": {"key_format": "native"},
}
BLOCKS = 2  # all of the demo transformer's blocks
DEMO_WAN_MODELS = "Wan 2.2 A14B (demo) or Wan 2.2 I2V-A14B (demo) or Wan single expert (demo)"
TARGETED = {f"blocks.{i}.{module}" for i in range(BLOCKS) for module in WAN_MODULES}


@pytest.fixture(scope="module")
def pipe():
    return DEMO_MODELS["wan22-a14b-demo"].build()


def _coverage(path) -> dict:
    header = read_header_from_path(path)
    return lora_coverage({t.name: (t.dtype, t.shape) for t in header.tensors.values()}, family="wan-demo")


def _outputs(pipe) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 1, 4, 4, generator=generator)
    text = torch.randn(1, 6, 32, generator=generator)
    with torch.no_grad():
        return {
            expert: module(latents, timestep=torch.tensor([500]), encoder_hidden_states=text, return_dict=False)[0]
            for expert, module in (("high", pipe.transformer), ("low", pipe.transformer_2))
        }


def _wrapped(module: torch.nn.Module, adapter: str) -> set[str]:
    return {
        name for name, layer in module.named_modules() if isinstance(layer, BaseTunerLayer) and adapter in layer.lora_A
    }


@pytest.mark.parametrize("expert", ["high", "low"])
@pytest.mark.parametrize("key_format", FORMATS)
def test_each_format_changes_exactly_the_targeted_expert(pipe, tmp_path, key_format, expert):
    path = write_lora(tmp_path / f"{key_format}.safetensors", blocks=BLOCKS, std=0.3, **FORMATS[key_format])
    manager = AdapterManager(pipe)
    before = _outputs(pipe)
    manager.apply([AdapterSpec(lora_id=1, display_name=key_format, path=path, weight=1.0, expert=expert)])
    try:
        after = _outputs(pipe)
        experts = {"high": pipe.transformer, "low": pipe.transformer_2}
        targeted, other = experts.pop(expert), *experts.values()
        # The coverage's converted names are exactly the layers diffusers wrapped: what the check accepts is
        # what diffusers loads.
        assert _wrapped(targeted, "lora_1") == set(_coverage(path)["module_shapes"]["transformer"]) == TARGETED
        assert _wrapped(other, "lora_1") == set()
    finally:
        manager.reset()
    untouched = "low" if expert == "high" else "high"
    assert not torch.allclose(after[expert], before[expert])
    assert torch.equal(after[untouched], before[untouched])
    assert all(torch.equal(value, before[key]) for key, value in _outputs(pipe).items())  # reset restores the base


@pytest.mark.parametrize("key_format", FORMATS)
def test_coverage_of_each_format(tmp_path, key_format):
    path = write_lora(tmp_path / "l.safetensors", blocks=BLOCKS, **FORMATS[key_format])
    coverage = _coverage(path)
    tensors = len(read_header_from_path(path).tensors)
    ignored = {"lightx2v": {"diff": BLOCKS, "diff_b": BLOCKS}}.get(key_format, {})  # lightx2v's norm diffs
    assert (coverage["tensors"], coverage["ignored"]) == (tensors, ignored)
    assert coverage["mapped"] == coverage["components"]["transformer"] == tensors - sum(ignored.values())
    assert coverage["module_shapes"]["transformer"]["blocks.1.ffn.net.0.proj"] == [24, 32]


def test_flux_kohya_coverage_reaches_the_transformer_and_the_text_encoder(tmp_path):
    # diffusers' kohya FLUX converter tests fused qkv weights for sparsity, which needs values: zeros stand in.
    header = read_header_from_path(write_kohya_flux_lora_with_text_encoder(tmp_path / "k.safetensors"))
    coverage = lora_coverage({t.name: (t.dtype, t.shape) for t in header.tensors.values()}, family="flux-demo")
    assert (coverage["components"], coverage["ignored"]) == ({"transformer": 15, "text_encoder": 36}, {})
    assert LoRA(coverage=coverage).coverage_text == "51 of 51 tensors map to text_encoder and transformer layers"
    # The fused qkv is split into diffusers' separate projections.
    assert coverage["module_shapes"]["transformer"]["transformer_blocks.0.attn.to_k"] == [32, 32]


def test_coverage_text_names_what_diffusers_drops(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "transformer.blocks.0.attn1.to_q.lora_A.weight": random_tensor(rng, "F16", (4, 24)),
        "transformer.blocks.0.attn1.to_q.lora_B.weight": random_tensor(rng, "F16", (24, 4)),
        "transformer.blocks.0.attn1.to_q.dora_scale": random_tensor(rng, "F16", (24, 1)),
    }
    coverage = _coverage(write_tensors(tmp_path / "dora.safetensors", tensors))
    lora = LoRA(coverage=coverage)
    assert lora.coverage_text == "2 of 3 tensors map to transformer layers; 1 ignored (dora_scale)"
    assert coverage["ignored_tensors"] == [["transformer.blocks.0.attn1.to_q.dora_scale", "dora_scale"]]


def test_layouts_diffusers_refuses_raise_with_its_reason(tmp_path):
    # ComfyUI names with DoRA scales: diffusers' Wan converter refuses the leftovers.
    path = write_lora(tmp_path / "l.safetensors", key_format="comfyui", blocks=1, extras=True)
    with pytest.raises(CoverageError, match="dora_scale"):
        _coverage(path)


def _peft_raw_tensors() -> dict:
    # PEFT's own state dict of a bare transformer: `base_model.model.` names, which diffusers loads into nothing.
    rng = np.random.default_rng(0)
    return {
        "base_model.model.blocks.0.attn1.to_q.lora_A.weight": random_tensor(rng, "F16", (4, 24)),
        "base_model.model.blocks.0.attn1.to_q.lora_B.weight": random_tensor(rng, "F16", (24, 4)),
    }


def _tensors_of(path) -> dict:
    """A written file's tensors in write_tensors' (dtype, shape, bytes) form."""
    header = read_header_from_path(path)
    data = path.read_bytes()
    return {
        name: (t.dtype, t.shape, data[header.data_start + t.start : header.data_start + t.end])
        for name, t in header.tensors.items()
    }


@pytest.mark.django_db
class TestIngest:
    def test_coverage_is_stored_and_shown(self, api, owner, workspace, client, tmp_path):
        actor = workspace.memberships.get(user=owner)
        path = write_lora(tmp_path / "lightx2v.safetensors", blocks=BLOCKS, **FORMATS["lightx2v"])
        lora = ingest_ready(actor=actor, path=path)
        assert lora.status == Status.READY and lora.base_model == "wan-demo"
        assert set(lora.module_shapes["transformer"]) == TARGETED
        text = "80 of 84 tensors map to transformer layers; 4 ignored (diff ×2, diff_b ×2)"
        body = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/{lora.id}/").json()
        assert body["coverage"]["text"] == text and body["coverage"]["ignored"] == {"diff": 2, "diff_b": 2}
        client.force_login(owner)
        assert text in client.get(f"/w/{workspace.slug}/loras/{lora.id}/").content.decode()

    def test_a_file_diffusers_loads_nothing_of_fails_with_the_reason(
        self, api, owner, workspace, client, tmp_path, s3_keys, demo_models
    ):
        actor = workspace.memberships.get(user=owner)
        lora = ingest_ready(actor=actor, path=write_tensors(tmp_path / "raw_peft.safetensors", _peft_raw_tensors()))
        reason = f"None of its 2 tensors map to a layer of {DEMO_WAN_MODELS} (diffusers ignores them: not converted)."
        assert (lora.status, lora.error, lora.file.name) == (Status.FAILED, reason, "")
        assert s3_keys(f"workspaces/{workspace.id}/loras/") == []  # the copy is deleted
        body = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/{lora.id}/").json()
        assert (body["status"], body["error"], body["coverage"]) == ("failed", reason, None)
        client.force_login(owner)
        assert reason in client.get(f"/w/{workspace.slug}/loras/{lora.id}/").content.decode()

    def test_a_layout_diffusers_refuses_fails_with_its_message(self, owner, workspace, tmp_path):
        actor = workspace.memberships.get(user=owner)
        path = write_lora(tmp_path / "dora.safetensors", key_format="comfyui", blocks=1, extras=True)
        lora = ingest_ready(actor=actor, path=path)
        assert lora.status == Status.FAILED
        assert lora.error.startswith(
            "This LoRA cannot be loaded into a Wan demo (tiny) pipeline: diffusers cannot convert its keys"
        )

    def test_an_unknown_width_keeps_its_converted_layers_for_the_fit_check(self, owner, workspace, tmp_path):
        from generation.model_registry import lora_fit_problem, model_registry

        rng = np.random.default_rng(0)
        tensors = {
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": random_tensor(rng, "F16", (4, 48)),
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": random_tensor(rng, "F16", (48, 4)),
        }
        actor = workspace.memberships.get(user=owner)
        lora = ingest_ready(actor=actor, path=write_tensors(tmp_path / "wide.safetensors", tensors))
        assert (lora.status, lora.base_model) == (Status.READY, "unknown")
        assert lora.module_shapes == {"transformer": {"blocks.0.attn1.to_q": [48, 48]}}
        assert "48→48 in the LoRA" in lora_fit_problem(lora.module_shapes, model_registry()["wan22-a14b-demo"])

    def test_layers_the_models_lack_are_ignored_and_a_file_of_only_those_fails(
        self, owner, workspace, tmp_path, demo_models
    ):
        # Wan I2V's image cross-attention (k_img/v_img -> attn2.add_k_proj/add_v_proj) is absent from T2V models.
        rng = np.random.default_rng(0)
        image_attention = {
            f"diffusion_model.blocks.0.cross_attn.{name}.lora_{side}.weight": random_tensor(rng, "F16", shape)
            for name in ("k_img", "v_img")
            for side, shape in (("down", (4, 24)), ("up", (24, 4)))
        }
        actor = workspace.memberships.get(user=owner)
        path = write_lora(tmp_path / "i2v.safetensors", key_format="comfyui", blocks=1)
        both = write_tensors(tmp_path / "i2v_full.safetensors", {**_tensors_of(path), **image_attention})
        lora = ingest_ready(actor=actor, path=both)
        assert lora.status == Status.READY
        assert lora.coverage_text == "20 of 24 tensors map to transformer layers; 4 ignored (no such layer)"
        # Every converted module is stored; the job-time fit check judges them against the chosen model.
        assert lora.module_shapes["transformer"]["blocks.0.attn2.add_k_proj"] == [24, 24]

        # The demo width but only blocks the demo models do not have (a deeper model's LoRA): nothing loads.
        deeper = {name.replace("blocks.0.", "blocks.5."): tensor for name, tensor in _tensors_of(path).items()}
        only = ingest_ready(actor=actor, path=write_tensors(tmp_path / "deeper.safetensors", deeper))
        assert (only.status, only.error) == (
            Status.FAILED,
            f"None of its 20 tensors map to a layer of {DEMO_WAN_MODELS} (diffusers ignores them: no such layer).",
        )

    def test_a_crash_in_the_ingest_task_fails_the_row_and_drops_the_copy(
        self, owner, workspace, tmp_path, s3_keys, monkeypatch, django_capture_on_commit_callbacks
    ):
        from loras import services
        from loras.services import processing
        from loras.tasks import lora_ingest

        def crash(store, lora):
            raise OSError("storage went away")

        actor = workspace.memberships.get(user=owner)
        path = write_lora(tmp_path / "a.safetensors")
        lora = services.lora_ingest_local_file(actor=actor, path=path, filename=path.name)
        monkeypatch.setattr(processing, "coverage_or_refusal", crash)
        with django_capture_on_commit_callbacks(execute=True):
            lora_ingest.apply(args=[lora.id])
        lora.refresh_from_db()
        assert (lora.status, lora.error) == (Status.FAILED, "Processing failed: OSError: storage went away")
        assert s3_keys(f"workspaces/{workspace.id}/loras/") == []
