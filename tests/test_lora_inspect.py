import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file

from loras.lora_inspect import FAMILIES, NotALoRA, detect_family, inspect_lora
from loras.safetensors_header import HeaderError, range_reader, read_header_from_path
from tests.lora_files import (
    FLUX_WIDTHS,
    SD_UNETS,
    WAN_MODULES,
    WAN_WIDTHS,
    write_full_checkpoint,
    write_lora,
    write_tensors,
)


def _inspect(path, *, filename=None, read=False):
    header = read_header_from_path(path)
    if not read:
        return inspect_lora(header, filename=filename or path.name)
    with open(path, "rb") as file:
        return inspect_lora(header, filename=filename or path.name, read_range=range_reader(file))


def _pair(module: str, rank: int, in_features: int, out_features: int, *, style=("lora_A", "lora_B")) -> dict:
    return {
        f"{module}.{style[0]}.weight": ("F16", (rank, in_features), bytes(2 * rank * in_features)),
        f"{module}.{style[1]}.weight": ("F16", (out_features, rank), bytes(2 * rank * out_features)),
    }


def _not_a_lora(path) -> str:
    with pytest.raises(NotALoRA) as caught:
        _inspect(path)
    return str(caught.value)


@pytest.mark.parametrize("family", [*WAN_WIDTHS, *FLUX_WIDTHS, *SD_UNETS])
@pytest.mark.parametrize("key_format", ["diffusers", "peft", "kohya", "comfyui"])
def test_detects_family_and_key_format(tmp_path, family, key_format):
    path = write_lora(tmp_path / "l.safetensors", family=family, key_format=key_format, rank=8, blocks=1)
    inspection = _inspect(path)

    assert inspection.family == family
    assert inspection.family in FAMILIES
    assert inspection.key_format == key_format
    assert inspection.rank == 8
    assert inspection.dtype == "F16"
    widths = {f: w for f, (w, _) in WAN_WIDTHS.items()} | FLUX_WIDTHS | {f: c for f, (c, _) in SD_UNETS.items()}
    assert inspection.hidden_size == widths[family]


# How each key format spells the first block's query and first feed-forward layer.
_SPELLINGS = {
    "diffusers": ("transformer.blocks.0.attn1.to_q", "transformer.blocks.0.ffn.net.0.proj"),
    "peft": ("blocks.0.attn1.to_q", "blocks.0.ffn.net.0.proj"),
    "kohya": ("lora_unet_blocks_0_self_attn_q", "lora_unet_blocks_0_ffn_0"),
    "comfyui": ("diffusion_model.blocks.0.self_attn.q", "diffusion_model.blocks.0.ffn.0"),
}


@pytest.mark.parametrize("key_format", ["diffusers", "peft", "kohya", "comfyui"])
def test_wan_modules_keep_the_files_names(tmp_path, key_format):
    """The header check names modules as the file does; diffusers' converted names come from the ingest task."""
    path = write_lora(tmp_path / "l.safetensors", family="wan-14b", key_format=key_format, blocks=1)
    inspection = _inspect(path)

    query, feed_forward = _SPELLINGS[key_format]
    assert len(inspection.target_modules) == len(WAN_MODULES)
    assert inspection.module_shapes[query] == (5120, 5120)
    assert inspection.module_shapes[feed_forward] == (5120, 13824)


def test_wan_top_level_and_image_modules_keep_the_family(tmp_path):
    tensors = {}
    for original in (
        "blocks.3.cross_attn.k_img",
        "blocks.3.cross_attn.v_img",
        "blocks.3.self_attn.o",
        "head.head",
        "text_embedding.0",
        "time_embedding.2",
        "time_projection.1",
        "img_emb.proj.1",
    ):
        tensors |= _pair(f"diffusion_model.{original}", 2, 24, 24, style=("lora_down", "lora_up"))
    inspection = _inspect(write_tensors(tmp_path / "l.safetensors", tensors))

    assert inspection.family == "wan-demo"
    assert len(inspection.target_modules) == 8


def test_kohya_block_numbers_sort_naturally(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", key_format="kohya", blocks=11, modules=["attn1.to_q"])
    assert _inspect(path).target_modules[:3] == [f"lora_unet_blocks_{i}_self_attn_q" for i in range(3)]


def test_comfyui_lightx2v_extras_are_counted_but_ignored(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", key_format="comfyui", blocks=1, alpha=4, extras=True)
    inspection = _inspect(path)

    pairs = len(WAN_MODULES)
    assert inspection.tensor_count == pairs * 5  # down, up, alpha, diff_b, dora_scale
    assert len(inspection.target_modules) == pairs
    assert inspection.family == "wan-demo"


def test_diffusion_model_prefix_with_flux_blocks_is_not_wan(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", family="flux", key_format="comfyui", blocks=1)
    inspection = _inspect(path)

    assert next(iter(read_header_from_path(path).tensors)).startswith("diffusion_model.")
    assert inspection.family == "flux"
    assert "diffusion_model.double_blocks.0.img_attn.qkv" in inspection.target_modules


def test_unrecognized_wan_width_is_unknown(tmp_path):
    path = write_tensors(tmp_path / "l.safetensors", _pair("transformer.blocks.0.attn1.to_q", 4, 2048, 2048))
    inspection = _inspect(path)
    assert (inspection.family, inspection.hidden_size) == ("unknown", 2048)


def test_unrecognized_architecture_is_unknown(tmp_path):
    llm_lora = _pair("base_model.model.model.layers.0.self_attn.q_proj", 4, 64, 64)
    path = write_tensors(tmp_path / "l.safetensors", llm_lora)
    inspection = _inspect(path)
    assert (inspection.family, inspection.hidden_size, inspection.key_format) == ("unknown", None, "peft")
    assert inspection.target_modules == ["base_model.model.model.layers.0.self_attn.q_proj"]


@pytest.mark.parametrize(
    ("family", "expected_modules"),
    [
        ("sd15", ["lora_te_text_model_encoder_layers_0_self_attn_q_proj"]),
        ("sdxl", ["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"]),
    ],
)
def test_stable_diffusion_text_encoder_only_loras(tmp_path, family, expected_modules):
    prefix, width = ("lora_te_", 768) if family == "sd15" else ("lora_te2_", 1280)
    module = f"{prefix}text_model_encoder_layers_0_self_attn_q_proj"
    tensors = _pair(module, 4, width, width, style=("lora_down", "lora_up"))
    inspection = _inspect(write_tensors(tmp_path / "l.safetensors", tensors))
    assert (inspection.family, inspection.key_format) == (family, "kohya")
    assert inspection.target_modules == expected_modules


def test_stable_diffusion_with_text_encoders(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", family="sdxl", key_format="kohya", text_encoder=True)
    inspection = _inspect(path)
    assert inspection.family == "sdxl"
    assert inspection.module_shapes["lora_te2_text_model_encoder_layers_0_mlp_fc1"] == (1280, 5120)


def test_old_diffusers_lora_down_up_names(tmp_path):
    module = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora"
    path = write_tensors(tmp_path / "l.safetensors", _pair(module, 4, 768, 320, style=("down", "up")))
    inspection = _inspect(path)
    assert (inspection.family, inspection.key_format) == ("sd15", "diffusers")
    assert inspection.target_modules == ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k"]


def test_conv_loras_are_accepted(tmp_path):
    module = "lora_unet_down_blocks_0_resnets_0_conv1"
    tensors = {
        f"{module}.lora_down.weight": ("F16", (4, 320, 3, 3), bytes(2 * 4 * 320 * 9)),
        f"{module}.lora_up.weight": ("F16", (320, 4, 1, 1), bytes(2 * 320 * 4)),
    }
    inspection = _inspect(write_tensors(tmp_path / "l.safetensors", tensors))
    assert inspection.module_shapes == {"lora_unet_down_blocks_0_resnets_0_conv1": (320, 320)}
    assert inspection.family == "unknown"


def test_bf16_dtype_and_most_common_rank(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", dtype="bfloat16", rank=16)
    assert (_inspect(path).dtype, _inspect(path).rank) == ("BF16", 16)

    mixed = {}
    for module, rank in (("to_q", 8), ("to_k", 8), ("to_v", 4)):
        mixed |= _pair(f"blocks.0.attn1.{module}", rank, 24, 24)
    assert _inspect(write_tensors(tmp_path / "m.safetensors", mixed)).rank == 8


def test_kohya_alpha_is_read_from_a_few_bytes(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", family="wan-14b", key_format="kohya", alpha=16, blocks=2)
    header = read_header_from_path(path)
    calls = []
    with open(path, "rb") as file:
        read = range_reader(file)

        def counting_read(offset, length):
            calls.append(length)
            return read(offset, length)

        inspection = inspect_lora(header, filename=path.name, read_range=counting_read)

    assert inspection.alpha == 16.0
    assert len(calls) == 1 and sum(calls) <= 64


def test_alpha_is_none_without_a_reader_or_metadata(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", key_format="kohya", alpha=16)
    assert _inspect(path).alpha is None


@pytest.mark.parametrize(
    ("dtype", "encoded"), [("F16", struct.pack("<e", 12.0)), ("BF16", struct.pack("<f", 12.0)[2:])]
)
def test_half_precision_alpha_scalars(tmp_path, dtype, encoded):
    tensors = _pair("lora_unet_blocks_0_self_attn_q", 4, 24, 24, style=("lora_down", "lora_up"))
    tensors["lora_unet_blocks_0_self_attn_q.alpha"] = (dtype, (), encoded)
    assert _inspect(write_tensors(tmp_path / "l.safetensors", tensors), read=True).alpha == 12.0


def test_scattered_alphas_are_read_one_by_one(tmp_path):
    tensors = {}
    for i in range(3):
        module = f"lora_unet_blocks_{i}_self_attn_q"
        tensors |= _pair(module, 4, 24, 24, style=("lora_down", "lora_up"))
        # F16 alphas sort among the F16 weights, so they are far apart in the data section.
        tensors[f"{module}.alpha"] = ("F16", (), struct.pack("<e", 2.0))
    assert _inspect(write_tensors(tmp_path / "l.safetensors", tensors), read=True).alpha == 2.0


def test_alpha_from_metadata(tmp_path):
    kohya = write_lora(tmp_path / "k.safetensors", key_format="kohya", kohya_metadata=True, alpha=2)
    assert _inspect(kohya).alpha == 2.0
    diffusers = write_lora(tmp_path / "d.safetensors", key_format="diffusers", alpha=32)
    assert _inspect(diffusers).alpha == 32.0


def test_training_metadata_summary(tmp_path):
    path = write_lora(tmp_path / "wan_ohwx.safetensors", key_format="kohya", rank=4, kohya_metadata=True)
    inspection = _inspect(path)
    training = inspection.training

    assert training["network_dim"] == 4
    assert training["network_alpha"] == 4.0
    assert training["base_model"] == "wan2.1_t2v_14B_bf16.safetensors"
    assert training["base_model_version"] == "wan2.1_t2v_14B"
    assert training["steps"] == 1200 and training["epochs"] == 12
    assert training["resolution"] == [512, 512]
    assert training["learning_rate"] == 0.0002
    assert training["optimizer"] == "torch.optim.adamw.AdamW"
    assert training["started_at"] == "2025-01-01T00:00:00+00:00"
    assert training["comment"] == "trained on 20 clips"
    assert training["network_args"] == {"loraplus_lr_ratio": "4"}
    assert training["dataset_dirs"] == {"10_ohwx": {"n_repeats": 10, "img_count": 20}}
    assert training["distinct_tags"] == 3
    assert training["top_tags"][0] == {"tag": "ohwx woman", "count": 20}
    assert inspection.trigger_words == ["ohwx woman", "smiling", "outdoors"]
    assert inspection.metadata["ss_output_name"] == "wan_ohwx"
    json.dumps(training)  # stored as JSON later


def test_garbage_metadata_is_skipped(tmp_path):
    metadata = {
        "ss_steps": "lots",
        "ss_network_alpha": "nan",
        "ss_tag_frequency": "{not json",
        "ss_dataset_dirs": "[1, 2]",
        "ss_training_started_at": "1e300",
        "ss_sd_model_name": "None",
    }
    inspection = _inspect(write_lora(tmp_path / "l.safetensors", metadata=metadata))
    assert inspection.training == {}
    assert inspection.trigger_words == []
    assert inspection.alpha is None


def test_tag_frequency_from_newer_kohya_datasets(tmp_path):
    datasets = json.dumps(
        [{"tag_frequency": {"a": {"sks dog": 5, "grass": 2}}}, {"tag_frequency": {"b": {"grass": 4}}}]
    )
    inspection = _inspect(write_lora(tmp_path / "l.safetensors", metadata={"ss_datasets": datasets}))
    assert inspection.trigger_words == ["grass", "sks dog"]


def test_trigger_phrase_wins_over_tags(tmp_path):
    metadata = {
        "modelspec.trigger_phrase": "ohwx, ohwx style, OHWX",
        "ss_tag_frequency": json.dumps({"d": {"tag": 9}}),
    }
    inspection = _inspect(write_lora(tmp_path / "l.safetensors", metadata=metadata))
    assert inspection.trigger_words == ["ohwx", "ohwx style"]


def test_trigger_words_are_capped(tmp_path):
    tags = {f"tag{i:02d}": 100 - i for i in range(30)}
    path = write_lora(tmp_path / "l.safetensors", metadata={"ss_tag_frequency": json.dumps({"d": tags})})
    inspection = _inspect(path)
    assert inspection.trigger_words == [f"tag{i:02d}" for i in range(10)]


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("wan22_style_high_noise.safetensors", "high"),
        ("Wan2.2-I2V-A14B-HighNoise-v1.safetensors", "high"),
        ("wan22_HIGHNOISE.safetensors", "high"),
        ("my-lora-high.safetensors", "high"),
        ("style_HIGH_v2.safetensors", "high"),
        ("wan22_style_LowNoise_e10.safetensors", "low"),
        ("wan22 low noise.safetensors", "low"),
        ("style_low.safetensors", "low"),
        ("style_HighNoise+LowNoise.safetensors", "both"),
        ("style_high_low.safetensors", "both"),
        ("style.safetensors", "both"),
        ("low_poly_style.safetensors", "both"),
        ("high_quality_portraits.safetensors", "both"),
        ("highlights_lowlights.safetensors", "both"),
    ],
)
def test_expert_from_filename(tmp_path, filename, expected):
    path = write_lora(tmp_path / "l.safetensors")
    assert _inspect(path, filename=filename).expert == expected


def test_expert_falls_back_on_metadata(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", metadata={"ss_output_name": "my_style_low_noise"})
    assert _inspect(path, filename="my_style.safetensors").expert == "low"
    assert _inspect(path, filename="my_style_HighNoise.safetensors").expert == "high"


def test_full_checkpoint_is_not_a_lora(tmp_path):
    message = _not_a_lora(write_full_checkpoint(tmp_path / "model.safetensors", blocks=2))
    assert message == (
        "This is not a LoRA: it has 44 tensors but no lora_A/lora_B, lora_down/lora_up or lora.down/lora.up pairs"
        " — it looks like a full model checkpoint."
    )


def test_random_tensor_names_are_not_a_lora(tmp_path):
    path = write_tensors(tmp_path / "x.safetensors", {"emb_params": ("F16", (2, 768), bytes(3072))})
    message = _not_a_lora(path)
    assert message.startswith("This is not a LoRA: it has 1 tensor but no lora_A/lora_B")
    assert "checkpoint" not in message


def test_empty_file_is_a_header_error(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(HeaderError, match="The file is empty."):
        _inspect(path)


def test_mismatched_ranks_name_the_key(tmp_path):
    tensors = _pair("blocks.0.attn1.to_q", 4, 24, 24)
    tensors["blocks.0.attn1.to_q.lora_B.weight"] = ("F16", (24, 8), bytes(2 * 24 * 8))
    message = _not_a_lora(write_tensors(tmp_path / "l.safetensors", tensors))
    assert "'blocks.0.attn1.to_q.lora_A.weight' has rank 4" in message
    assert "'blocks.0.attn1.to_q.lora_B.weight' has rank 8" in message


def test_unpaired_half_names_the_key(tmp_path):
    tensors = _pair("blocks.0.attn1.to_q", 4, 24, 24)
    tensors["blocks.0.attn1.to_k.lora_A.weight"] = ("F16", (4, 24), bytes(2 * 4 * 24))
    message = _not_a_lora(write_tensors(tmp_path / "l.safetensors", tensors))
    assert "'blocks.0.attn1.to_k.lora_A.weight' has no matching lora_B/lora_up tensor" in message


def test_wrong_dimensions_name_the_key(tmp_path):
    tensors = {
        "blocks.0.attn1.to_q.lora_A.weight": ("F16", (4, 24, 2), bytes(2 * 4 * 24 * 2)),
        "blocks.0.attn1.to_q.lora_B.weight": ("F16", (24, 4), bytes(2 * 24 * 4)),
    }
    message = _not_a_lora(write_tensors(tmp_path / "l.safetensors", tensors))
    assert "'blocks.0.attn1.to_q.lora_A.weight' has shape [4, 24, 2]" in message


def test_test_files_are_readable_by_the_safetensors_library(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", key_format="kohya", alpha=4, extras=True)
    loaded = load_file(str(path))
    assert loaded["lora_unet_blocks_0_self_attn_q.alpha"] == np.float32(4)
    assert loaded["lora_unet_blocks_0_self_attn_q.lora_down.weight"].shape == (4, 24)


@pytest.mark.parametrize(
    "module_shapes",
    [
        {"blocks.0.attn1.to_q": (24, 24), "blocks.0.ffn.net.0.proj": (24, 32)},  # diffusers' converted names
        {"diffusion_model.blocks.0.self_attn.q": (24, 24)},  # original Wan names
        {"lora_unet_blocks_0_self_attn_q": (24, 24)},  # kohya/musubi flattening
    ],
)
def test_detect_family_reads_every_spelling(module_shapes):
    assert detect_family(module_shapes) == ("wan-demo", 24)
