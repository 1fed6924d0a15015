"""Shared helpers and fixtures for the model-runtime tests (tests/test_runtime_*.py); no Django needed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Before diffusers is first imported: nothing in these tests may reach for the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from tests.lora_files import random_tensor, write_tensors  # noqa: E402

# Linear layers of the demo Wan transformer (hidden 24, ffn 32, 2 blocks): module path -> (in, out) features.
WAN_DEMO_LORA_TARGETS: dict[str, tuple[int, int]] = {
    f"blocks.{block}.{module}": shape
    for block in (0, 1)
    for module, shape in {
        "attn1.to_q": (24, 24),
        "attn1.to_k": (24, 24),
        "attn1.to_v": (24, 24),
        "attn1.to_out.0": (24, 24),
        "attn2.to_q": (24, 24),
        "attn2.to_k": (24, 24),
        "attn2.to_v": (24, 24),
        "attn2.to_out.0": (24, 24),
        "ffn.net.0.proj": (24, 32),
        "ffn.net.2": (32, 24),
    }.items()
}

# A few Linear layers of the demo Flux transformer (hidden 32).
FLUX_DEMO_LORA_TARGETS: dict[str, tuple[int, int]] = {
    "transformer_blocks.0.attn.to_q": (32, 32),
    "transformer_blocks.0.attn.to_k": (32, 32),
    "transformer_blocks.0.attn.to_v": (32, 32),
    "transformer_blocks.0.attn.to_out.0": (32, 32),
    "single_transformer_blocks.0.attn.to_q": (32, 32),
    "single_transformer_blocks.0.proj_mlp": (32, 128),
}

RUN_ARGS = {
    "prompt": "a red fox in the snow",
    "negative_prompt": "blurry",
    "width": 32,
    "height": 32,
    "num_frames": 5,
    "steps": 2,
    "guidance": 4.0,
    "guidance_2": 3.0,
    "seed": 7,
}


def write_lora(
    path: Path,
    *,
    seed: int,
    targets: dict[str, tuple[int, int]] = WAN_DEMO_LORA_TARGETS,
    rank: int = 4,
    std: float = 0.2,
    component: str = "transformer",
) -> Path:
    """A LoRA in diffusers/PEFT format (`transformer.<module>.lora_A.weight` [rank, in], `lora_B` [out, rank]).

    lora_B is random rather than zero (as a freshly initialised LoRA would be), so the LoRA changes outputs.
    """
    rng = np.random.default_rng(seed)
    tensors = {}
    for module, (in_features, out_features) in targets.items():
        tensors[f"{component}.{module}.lora_A.weight"] = random_tensor(rng, "F32", (rank, in_features), std)
        tensors[f"{component}.{module}.lora_B.weight"] = random_tensor(rng, "F32", (out_features, rank), std)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tensors(path, tensors)


def write_mismatched_lora(path: Path) -> Path:
    """Keys that match the demo Wan transformer but with a hidden size of 48 (a LoRA for another model size)."""
    return write_lora(path, seed=0, targets=dict.fromkeys(WAN_DEMO_LORA_TARGETS, (48, 48)))


def write_corrupt_lora(path: Path) -> Path:
    """A file that is not safetensors at all (e.g. a truncated or garbled upload)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x01not a safetensors file" * 8)
    return path


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(a, b)


def assert_differs(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.abs(a - b).max() > 1e-4, "expected the outputs to differ"
