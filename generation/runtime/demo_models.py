"""Tiny random-weight pipelines, built fully offline, that stand in for the real base models.

They have the real pipeline classes and component classes (so LoRA loading, expert switching, callbacks and
encoding run through the same diffusers code paths as in production), only with a few thousand parameters each,
so a two-step generation takes well under a second on a CPU. Shapes follow diffusers' own pipeline tests
(tests/pipelines/wan, tests/pipelines/flux). The LoRA library recognises the families by hidden size:
24 for "wan-demo" (2 heads x 12) and 32 for "flux-demo" (2 heads x 16), so those must not change.
"""

from __future__ import annotations

import json
import logging
import shutil
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

logger = logging.getLogger(__name__)

# Written last into each model folder: its presence means the folder is complete.
DEMO_MANIFEST = "demo.json"

# Wan 2.2 A14B switches from the high-noise expert (`transformer`) to the low-noise one (`transformer_2`) once
# the timestep drops below boundary_ratio * num_train_timesteps.
WAN22_BOUNDARY_RATIO = 0.875

_TEXT_DIM = 32
_TOKENIZER_VOCAB_SIZE = 128


@dataclass(frozen=True)
class DemoModel:
    key: str
    pipeline_class: str
    kind: str  # "video" or "image"
    lora_family: str
    hidden_size: int
    experts: tuple[str, ...]
    build: Callable[[], DiffusionPipeline]

    def manifest(self) -> dict[str, object]:
        return {
            "key": self.key,
            "pipeline_class": self.pipeline_class,
            "kind": self.kind,
            "lora_family": self.lora_family,
            "hidden_size": self.hidden_size,
            "experts": list(self.experts),
        }


def _char_tokenizer(*, model_max_length: int, bos: str | None, eos: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer built with `tokenizers` so it saves and loads without any download.

    Character level (rather than a handful of whole words) keeps different prompts mapping to different ids.
    """
    specials = ["<pad>", eos, "<unk>"] + ([bos] if bos else [])
    characters = sorted(set(string.ascii_lowercase + string.digits + string.punctuation + " "))
    vocab = {token: index for index, token in enumerate(specials + characters)}
    assert len(vocab) <= _TOKENIZER_VOCAB_SIZE

    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    template = f"{bos} $A {eos}" if bos else f"$A {eos}"
    special_ids = [(token, vocab[token]) for token in ([bos] if bos else []) + [eos]]
    backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=special_ids)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token=eos,
        unk_token="<unk>",
        bos_token=bos,
        model_max_length=model_max_length,
    )


# Wan 2.2 I2V-A14B has no CLIP image encoder: its transformer reads the noise latents concatenated with the
# VAE-encoded input image and a 4-channel first-frame mask (16 + 16 + 4 channels).
WAN_I2V_IN_CHANNELS = 36


def _wan_transformer(seed: int, *, in_channels: int = 16) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=_TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def _tiny_t5_config(config_class: type[T5Config] | type[UMT5Config], *, d_ff: int) -> T5Config | UMT5Config:
    """The (UM)T5 text encoder config both demo families use, at demo size."""
    return config_class(
        vocab_size=_TOKENIZER_VOCAB_SIZE,
        d_model=_TEXT_DIM,
        d_kv=8,
        d_ff=d_ff,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def _wan_common() -> dict:
    """The components every Wan demo pipeline shares: VAE, text encoder, tokenizer and scheduler."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(_tiny_t5_config(UMT5Config, d_ff=64))
    # Wan ships UniPC in flow mode; with flow_shift=3 a two-step run visits t=999 (high-noise expert) and
    # t=750 (low-noise expert), so even the fastest test exercises both experts.
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return {
        "tokenizer": _char_tokenizer(model_max_length=512, bos=None, eos="</s>"),
        "text_encoder": text_encoder,
        "vae": vae,
        "scheduler": scheduler,
    }


def _build_wan(*, two_experts: bool) -> WanPipeline:
    return WanPipeline(
        **_wan_common(),
        transformer=_wan_transformer(seed=1),
        # A different seed, so a LoRA landing in the wrong expert changes the output differently.
        transformer_2=_wan_transformer(seed=2) if two_experts else None,
        boundary_ratio=WAN22_BOUNDARY_RATIO if two_experts else None,
        # The single expert stands in for TI2V-5B, whose per-token timesteps also let a first frame condition it.
        expand_timesteps=not two_experts,
    )


def _build_wan_i2v() -> WanImageToVideoPipeline:
    """Wan 2.2 I2V-A14B at demo size: two experts reading 36 input channels, and (like the real model) no
    image_encoder / image_processor, which only Wan 2.1 I2V's `image_dim` transformers use."""
    return WanImageToVideoPipeline(
        **_wan_common(),
        transformer=_wan_transformer(seed=1, in_channels=WAN_I2V_IN_CHANNELS),
        transformer_2=_wan_transformer(seed=2, in_channels=WAN_I2V_IN_CHANNELS),
        boundary_ratio=WAN22_BOUNDARY_RATIO,
    )


def _build_flux() -> FluxPipeline:
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_TEXT_DIM,
        pooled_projection_dim=_TEXT_DIM,
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=3,
            eos_token_id=2,  # 2 selects CLIP's legacy pooling (argmax of the ids), which any tokenizer satisfies
            pad_token_id=0,
            hidden_size=_TEXT_DIM,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=_TOKENIZER_VOCAB_SIZE,
            hidden_act="gelu",
            projection_dim=_TEXT_DIM,
        )
    )
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(_tiny_t5_config(T5Config, d_ff=37))
    torch.manual_seed(0)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_char_tokenizer(model_max_length=77, bos="<|startoftext|>", eos="<|endoftext|>"),
        text_encoder_2=text_encoder_2,
        tokenizer_2=_char_tokenizer(model_max_length=512, bos=None, eos="</s>"),
        transformer=transformer,
    )


DEMO_MODELS: dict[str, DemoModel] = {
    model.key: model
    for model in (
        DemoModel(
            key="wan22-a14b-demo",
            pipeline_class="WanPipeline",
            kind="video",
            lora_family="wan-demo",
            hidden_size=24,
            experts=("high", "low"),
            build=lambda: _build_wan(two_experts=True),
        ),
        DemoModel(
            key="wan-ti2v-demo",
            pipeline_class="WanPipeline",
            kind="video",
            lora_family="wan-demo",
            hidden_size=24,
            experts=("high",),
            build=lambda: _build_wan(two_experts=False),
        ),
        DemoModel(
            key="wan22-i2v-a14b-demo",
            pipeline_class="WanImageToVideoPipeline",
            kind="video",
            lora_family="wan-demo",
            hidden_size=24,
            experts=("high", "low"),
            build=_build_wan_i2v,
        ),
        DemoModel(
            key="flux-demo",
            pipeline_class="FluxPipeline",
            kind="image",
            lora_family="flux-demo",
            hidden_size=32,
            experts=("high",),
            build=_build_flux,
        ),
    )
}


def build_demo_models(target_dir: Path, *, force: bool = False) -> dict[str, Path]:
    """Build every demo pipeline into `target_dir/<key>/` and return {key: folder}.

    Idempotent: a folder that already holds its manifest is kept unless `force`. Each model is written into a
    temporary sibling folder and renamed into place, so a crash never leaves a half-written model that a later
    call would mistake for a complete one.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for key, model in DEMO_MODELS.items():
        destination = target_dir / key
        built[key] = destination
        if (destination / DEMO_MANIFEST).is_file() and not force:
            continue
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target_dir))
        try:
            model.build().save_pretrained(staging)
            (staging / DEMO_MANIFEST).write_text(json.dumps(model.manifest(), indent=2) + "\n")
            if destination.exists():
                shutil.rmtree(destination)
            staging.rename(destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("Built demo model %s in %s", key, destination)
    return built
