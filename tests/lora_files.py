"""Writers of realistic (and deliberately broken) LoRA safetensors files for tests and benchmarks.

Files are laid out the way the safetensors library writes them (tensors grouped by dtype, header padded
to 8 bytes), but by hand, so that BF16 data (which numpy lacks) and corrupt files come from the same
writer. ``tests/test_lora_inspect.py`` checks that the reference library reads these files.

Module shapes follow the real models; keep ``blocks`` small for the big families to keep files small.
"""

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

WAN_WIDTHS = {"wan-14b": (5120, 13824), "wan-5b": (3072, 14336), "wan-1.3b": (1536, 8960), "wan-demo": (24, 32)}
FLUX_WIDTHS = {"flux": 3072, "flux-demo": 32}
# family -> (UNet cross-attention context width, attention sites as (diffusers name, original name, channels))
SD_UNETS = {
    "sd15": (
        768,
        [
            ("down_blocks.0.attentions.0", "input_blocks.1.1", 320),
            ("down_blocks.1.attentions.0", "input_blocks.4.1", 640),
            ("down_blocks.2.attentions.0", "input_blocks.7.1", 1280),
        ],
    ),
    "sdxl": (
        2048,
        [
            ("down_blocks.1.attentions.0", "input_blocks.4.1", 640),
            ("down_blocks.2.attentions.0", "input_blocks.7.1", 1280),
        ],
    ),
}
FAMILIES = (*WAN_WIDTHS, *FLUX_WIDTHS, *SD_UNETS)

# Wan modules by their diffusers name (the vocabulary lora_inspect normalizes to) -> original Wan name.
WAN_MODULES = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
KEY_FORMATS = ("diffusers", "peft", "kohya", "comfyui")
# Wan-only spellings on top of those: lightx2v's distill LoRAs (ComfyUI names plus `.diff_b` biases and norm
# `.diff`/`.diff_b` keys) and native Wan module names with no prefix at all.
WAN_ONLY_KEY_FORMATS = ("lightx2v", "native")
PAIR_SUFFIXES = {
    "A/B": (".lora_A.weight", ".lora_B.weight"),
    "down/up": (".lora_down.weight", ".lora_up.weight"),
    "lora.down": (".lora.down.weight", ".lora.up.weight"),
}
_DEFAULT_PAIR_STYLE = {
    "diffusers": "A/B",
    "peft": "A/B",
    "kohya": "down/up",
    "comfyui": "down/up",
    "lightx2v": "A/B",
    "native": "down/up",
}
_DTYPE_CODES = {"float16": "F16", "float32": "F32", "bfloat16": "BF16"}
_CODE_SIZES = {"F16": 2, "BF16": 2, "F32": 4, "U8": 1}

# A tensor for write_tensors: (safetensors dtype code, shape, raw little-endian bytes).
Tensor = tuple[str, tuple[int, ...], bytes]


def write_lora(
    path: str | Path,
    *,
    family: str = "wan-demo",
    key_format: str = "diffusers",
    rank: int = 4,
    alpha: float | None = None,
    dtype: str = "float16",
    blocks: int = 2,
    modules: Sequence[str] | None = None,
    text_encoder: bool = False,
    pair_style: str | None = None,
    extras: bool = False,
    kohya_metadata: bool = False,
    metadata: Mapping[str, str] | None = None,
    seed: int = 0,
    std: float = 0.01,
) -> Path:
    """Write a LoRA for ``family`` in ``key_format``; weights are normal with standard deviation ``std``.

    ``modules`` picks Wan modules by diffusers name (keys of ``WAN_MODULES``). ``alpha`` becomes F32
    ``.alpha`` scalars for kohya/comfyui files and diffusers' ``lora_adapter_metadata`` otherwise.
    ``pair_style`` overrides the format's usual pair names ("A/B", "down/up", "lora.down"). ``extras``
    adds the non-pair tensors real files carry (``.diff_b``, ``.dora_scale``). ``text_encoder`` adds
    text-encoder modules (SD families only).
    """
    if key_format not in KEY_FORMATS + WAN_ONLY_KEY_FORMATS:
        raise ValueError(f"Unknown key_format {key_format!r}; use one of {KEY_FORMATS + WAN_ONLY_KEY_FORMATS}.")
    if key_format in WAN_ONLY_KEY_FORMATS and family not in WAN_WIDTHS:
        raise ValueError(f"key_format {key_format!r} is for Wan families only.")
    if modules is not None and family not in WAN_WIDTHS:
        raise ValueError("modules can only be chosen for Wan families.")
    down_suffix, up_suffix = PAIR_SUFFIXES[pair_style or _DEFAULT_PAIR_STYLE[key_format]]
    code = _DTYPE_CODES[dtype]
    rng = np.random.default_rng(seed)

    tensors: dict[str, Tensor] = {}
    for module, in_features, out_features in _module_list(family, key_format, blocks, modules, text_encoder):
        tensors[module + down_suffix] = random_tensor(rng, code, (rank, in_features), std)
        tensors[module + up_suffix] = random_tensor(rng, code, (out_features, rank), std)
        if alpha is not None and key_format in ("kohya", "comfyui", "lightx2v", "native"):
            tensors[f"{module}.alpha"] = ("F32", (), struct.pack("<f", alpha))
        if key_format == "lightx2v":
            tensors[f"{module}.diff_b"] = random_tensor(rng, code, (out_features,), std)
        if extras:
            tensors[f"{module}.diff_b"] = random_tensor(rng, code, (out_features,))
            tensors[f"{module}.dora_scale"] = random_tensor(rng, code, (out_features, 1))

    if key_format == "lightx2v":
        hidden = WAN_WIDTHS[family][0]
        for i in range(blocks):
            # diffusers drops norm diffs (they are zeros in the published files).
            tensors[f"diffusion_model.blocks.{i}.norm3.diff"] = random_tensor(rng, code, (hidden,), 0.0)
            tensors[f"diffusion_model.blocks.{i}.norm3.diff_b"] = random_tensor(rng, code, (hidden,), 0.0)
    all_metadata = {"format": "pt"}
    if alpha is not None and key_format in ("diffusers", "peft"):
        all_metadata["lora_adapter_metadata"] = json.dumps({"transformer.lora_alpha": alpha, "transformer.r": rank})
    if kohya_metadata:
        all_metadata.update(kohya_training_metadata(name=Path(path).stem, rank=rank, alpha=alpha))
    all_metadata.update(metadata or {})
    return write_tensors(path, tensors, metadata=all_metadata)


def kohya_training_metadata(*, name: str, rank: int, alpha: float | None) -> dict[str, str]:
    """The ``ss_*`` fields musubi-tuner writes for a Wan LoRA, with a small tagged dataset."""
    return {
        "ss_network_module": "networks.lora_wan",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha if alpha is not None else rank),
        "ss_output_name": name,
        "ss_sd_model_name": "wan2.1_t2v_14B_bf16.safetensors",
        "ss_base_model_version": "wan2.1_t2v_14B",
        "ss_steps": "1200",
        "ss_epoch": "12",
        "ss_num_epochs": "12",
        "ss_learning_rate": "0.0002",
        "ss_optimizer": "torch.optim.adamw.AdamW",
        "ss_lr_scheduler": "constant",
        "ss_resolution": "(512, 512)",
        "ss_mixed_precision": "bf16",
        "ss_seed": "42",
        "ss_training_started_at": "1735689600.5",
        "ss_training_comment": "trained on 20 clips",
        "ss_network_args": json.dumps({"loraplus_lr_ratio": "4"}),
        "ss_tag_frequency": json.dumps({"10_ohwx": {"ohwx woman": 20, "smiling": 7, "outdoors": 5, " ": 3}}),
        "ss_dataset_dirs": json.dumps({"10_ohwx": {"n_repeats": 10, "img_count": 20}}),
    }


def write_full_checkpoint(path: str | Path, *, family: str = "wan-demo", blocks: int = 2, seed: int = 0) -> Path:
    """A plain (non-LoRA) Wan transformer checkpoint: weights and biases, no LoRA pairs."""
    hidden, ffn = WAN_WIDTHS[family]
    rng = np.random.default_rng(seed)
    tensors = {"patch_embedding.weight": random_tensor(rng, "F16", (hidden, 16, 1, 2, 2))}
    for i in range(blocks):
        for module in WAN_MODULES.values():
            in_features, out_features = _wan_shape(module, hidden, ffn)
            tensors[f"blocks.{i}.{module}.weight"] = random_tensor(rng, "F16", (out_features, in_features))
            tensors[f"blocks.{i}.{module}.bias"] = random_tensor(rng, "F16", (out_features,))
        tensors[f"blocks.{i}.norm3.weight"] = random_tensor(rng, "F16", (hidden,))
    tensors["head.head.weight"] = random_tensor(rng, "F16", (64, hidden))
    return write_tensors(path, tensors)


def write_tensors(
    path: str | Path, tensors: Mapping[str, Tensor], *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write tensors given as (dtype code, shape, bytes) in the safetensors layout."""
    # Like the safetensors library: wider dtypes first (so F32 alpha scalars sit together), then by name.
    order = sorted(tensors, key=lambda name: (-_CODE_SIZES[tensors[name][0]], name))
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        code, shape, data = tensors[name]
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    return write_raw(path, header, b"".join(tensors[name][2] for name in order))


def write_raw(
    path: str | Path, header: bytes | Mapping[str, object], data: bytes = b"", *, length_prefix: int | None = None
) -> Path:
    """Write a length prefix, a header and data exactly as given: the tool for corrupt files.

    A dict header is JSON-encoded and space-padded to 8 bytes like the safetensors library does;
    bytes are written verbatim. ``length_prefix`` overrides the declared header length.
    """
    if isinstance(header, Mapping):
        header = json.dumps(header, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)
    path = Path(path)
    declared = len(header) if length_prefix is None else length_prefix
    path.write_bytes(struct.pack("<Q", declared) + header + data)
    return path


def write_sparse_lora(path: str | Path, size_bytes: int, *, rank: int = 4, hidden: int = 5120) -> Path:
    """A valid Wan-14B-shaped LoRA of exactly ``size_bytes``, written as a sparse file in milliseconds.

    One huge lora_B carries the size; the data section is never written, only extended with truncate().
    """
    down_bytes, row_bytes = rank * hidden * 2, rank * 2

    def encode(rows: int) -> bytes:
        module = "diffusion_model.blocks.0.self_attn.q"
        up_end = down_bytes + rows * row_bytes
        down = {"dtype": "F16", "shape": [rank, hidden], "data_offsets": [0, down_bytes]}
        up = {"dtype": "F16", "shape": [rows, rank], "data_offsets": [down_bytes, up_end]}
        return json.dumps({f"{module}.lora_down.weight": down, f"{module}.lora_up.weight": up}).encode()

    # Size the header for the widest row count first, so that the real header can only be shorter.
    rows = (size_bytes - 8 - len(encode(size_bytes)) - down_bytes) // row_bytes
    if rows < 1:
        raise ValueError(f"{size_bytes} bytes is too small for a sparse LoRA of rank {rank} and width {hidden}.")
    encoded = encode(rows)
    # Whitespace after the JSON is allowed; it makes the file exactly the requested size.
    padding = size_bytes - 8 - len(encoded) - down_bytes - rows * row_bytes
    path = write_raw(path, encoded + b" " * padding)
    with open(path, "r+b") as file:
        file.truncate(size_bytes)
    return path


def _module_list(
    family: str, key_format: str, blocks: int, modules: Sequence[str] | None, text_encoder: bool
) -> Iterable[tuple[str, int, int]]:
    """(module name as the key format spells it, in_features, out_features) for each LoRA pair."""
    if family in WAN_WIDTHS:
        hidden, ffn = WAN_WIDTHS[family]
        for i in range(blocks):
            for diffusers_name in modules or WAN_MODULES:
                original = WAN_MODULES[diffusers_name]
                name = _spell(key_format, f"blocks.{i}.{diffusers_name}", f"blocks.{i}.{original}", "transformer.")
                yield name, *_wan_shape(original, hidden, ffn)
    elif family in FLUX_WIDTHS:
        h = FLUX_WIDTHS[family]
        for i in range(blocks):
            diffusers_modules = [
                (f"transformer_blocks.{i}.attn.to_q", h, h),
                (f"transformer_blocks.{i}.attn.to_k", h, h),
                (f"transformer_blocks.{i}.attn.to_v", h, h),
                (f"transformer_blocks.{i}.attn.to_out.0", h, h),
                (f"transformer_blocks.{i}.ff.net.0.proj", h, 4 * h),
                (f"transformer_blocks.{i}.ff.net.2", 4 * h, h),
                (f"single_transformer_blocks.{i}.attn.to_q", h, h),
                (f"single_transformer_blocks.{i}.proj_mlp", h, 4 * h),
                (f"single_transformer_blocks.{i}.proj_out", 5 * h, h),
            ]
            original_modules = [
                (f"double_blocks.{i}.img_attn.qkv", h, 3 * h),
                (f"double_blocks.{i}.img_attn.proj", h, h),
                (f"double_blocks.{i}.txt_attn.qkv", h, 3 * h),
                (f"double_blocks.{i}.img_mlp.0", h, 4 * h),
                (f"double_blocks.{i}.img_mlp.2", 4 * h, h),
                (f"single_blocks.{i}.linear1", h, 7 * h),
                (f"single_blocks.{i}.linear2", 5 * h, h),
            ]
            chosen = diffusers_modules if key_format in ("diffusers", "peft") else original_modules
            for name, in_features, out_features in chosen:
                yield _spell(key_format, name, name, "transformer."), in_features, out_features
    elif family in SD_UNETS:
        context, sites = SD_UNETS[family]
        for diffusers_site, original_site, channels in sites[:blocks]:
            for module, in_features in (
                ("attn1.to_q", channels),
                ("attn1.to_k", channels),
                ("attn1.to_v", channels),
                ("attn1.to_out.0", channels),
                ("attn2.to_q", channels),
                ("attn2.to_k", context),
                ("attn2.to_v", context),
                ("attn2.to_out.0", channels),
            ):
                diffusers_name = f"{diffusers_site}.transformer_blocks.0.{module}"
                original_name = f"{original_site}.transformer_blocks.0.{module}"
                # kohya kept diffusers names for SD 1.5 UNets but uses the original names for SDXL.
                if key_format == "kohya" and family == "sd15":
                    original_name = diffusers_name
                yield _spell(key_format, diffusers_name, original_name, "unet."), in_features, channels
        if text_encoder:
            yield from _text_encoder_modules(family, key_format)
    else:
        raise ValueError(f"Unknown family {family!r}; use one of {FAMILIES}.")


def _text_encoder_modules(family: str, key_format: str) -> Iterable[tuple[str, int, int]]:
    encoders = [("text_encoder.", "lora_te_" if family == "sd15" else "lora_te1_", 768)]
    if family == "sdxl":
        encoders.append(("text_encoder_2.", "lora_te2_", 1280))
    for diffusers_prefix, kohya_prefix, width in encoders:
        for module, in_features, out_features in (
            ("self_attn.q_proj", width, width),
            ("self_attn.out_proj", width, width),
            ("mlp.fc1", width, 4 * width),
        ):
            name = f"text_model.encoder.layers.0.{module}"
            if key_format == "kohya":
                yield kohya_prefix + name.replace(".", "_"), in_features, out_features
            else:
                yield diffusers_prefix + name, in_features, out_features


def _spell(key_format: str, diffusers_name: str, original_name: str, diffusers_prefix: str) -> str:
    if key_format == "diffusers":
        return diffusers_prefix + diffusers_name
    if key_format == "peft":
        return diffusers_name
    if key_format == "kohya":
        return "lora_unet_" + original_name.replace(".", "_")
    if key_format == "native":
        return original_name
    return "diffusion_model." + original_name


def _wan_shape(original_module: str, hidden: int, ffn: int) -> tuple[int, int]:
    """(in_features, out_features) of a Wan linear layer given by its original name."""
    if original_module == "ffn.0":
        return hidden, ffn
    if original_module == "ffn.2":
        return ffn, hidden
    return hidden, hidden


def random_tensor(rng: np.random.Generator, code: str, shape: tuple[int, ...], std: float = 0.01) -> Tensor:
    values = (rng.standard_normal(shape, dtype=np.float32) * std).astype("<f4")
    if code == "BF16":
        # bfloat16 is the upper half of a float32 (truncation is fine for test data).
        data = (values.view("<u4") >> 16).astype("<u2").tobytes()
    else:
        data = values.astype({"F16": "<f2", "F32": "<f4"}[code]).tobytes()
    return code, shape, data


# The demo FluxPipeline's CLIP text encoder (generation/runtime/demo_models.py): hidden 32, MLP 37, 2 layers.
FLUX_DEMO_CLIP = {"hidden": 32, "intermediate": 37, "layers": 2}


def write_kohya_flux_lora_with_text_encoder(
    path: str | Path, *, seed: int = 0, rank: int = 4, alpha: float = 4.0, std: float = 0.2
) -> Path:
    """A kohya (sd-scripts) FLUX LoRA for the demo FluxPipeline with ``lora_te1_`` keys for its CLIP text encoder.

    Transformer keys cover the demo's double block 0 (img/txt attention, img MLP); diffusers' kohya converter
    hard-codes the real model's widths for single blocks, so the demo's are left out. Every pair has an F32
    ``.alpha``. Text-encoder keys cover each CLIP layer's attention projections and MLP.
    """
    h = FLUX_WIDTHS["flux-demo"]
    clip = FLUX_DEMO_CLIP
    modules = [
        ("lora_unet_double_blocks_0_img_attn_qkv", h, 3 * h),
        ("lora_unet_double_blocks_0_img_attn_proj", h, h),
        ("lora_unet_double_blocks_0_txt_attn_qkv", h, 3 * h),
        ("lora_unet_double_blocks_0_img_mlp_0", h, 4 * h),
        ("lora_unet_double_blocks_0_img_mlp_2", 4 * h, h),
    ]
    for layer in range(clip["layers"]):
        prefix = f"lora_te1_text_model_encoder_layers_{layer}_"
        modules += [(prefix + f"self_attn_{p}_proj", clip["hidden"], clip["hidden"]) for p in ("q", "k", "v", "out")]
        modules += [
            (prefix + "mlp_fc1", clip["hidden"], clip["intermediate"]),
            (prefix + "mlp_fc2", clip["intermediate"], clip["hidden"]),
        ]
    rng = np.random.default_rng(seed)
    tensors: dict[str, Tensor] = {}
    for module, in_features, out_features in modules:
        tensors[f"{module}.lora_down.weight"] = random_tensor(rng, "F16", (rank, in_features), std)
        tensors[f"{module}.lora_up.weight"] = random_tensor(rng, "F16", (out_features, rank), std)
        tensors[f"{module}.alpha"] = ("F32", (), struct.pack("<f", alpha))
    return write_tensors(path, tensors, metadata={"format": "pt"})
