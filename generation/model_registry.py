"""The base models jobs can run on: what they are, where their weights live, what they can do.

Entries are declared here with their real-world defaults; `LORASITE_MODELS_FILE` (YAML) overrides
fields of an entry or adds new ones, e.g. to point a key at a downloaded snapshot::

    wan22-t2v-a14b:
      path: /models/Wan2.2-T2V-A14B-Diffusers
      enabled: true

Weights are local diffusers directories; nothing is downloaded at run time (HF_HUB_OFFLINE=1).
This module is plain data: the web process reads it without importing torch.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from generation.runtime.memory_plan import PLACEMENTS, STORAGE_DTYPES
from lorasite.errors import InvalidInput

# Component that holds each expert's transformer, as diffusers' Wan 2.2 pipeline names them.
TWO_EXPERTS = {"high": "transformer", "low": "transformer_2"}
ONE_EXPERT = {"high": "transformer"}


@dataclass(frozen=True)
class Capabilities:
    resolutions: tuple[tuple[int, int], ...]  # (width, height)
    steps: tuple[int, int]  # inclusive range
    default_steps: int
    default_guidance: float
    guidance_range: tuple[float, float] = (0.0, 20.0)
    frame_counts: tuple[int, ...] = ()  # video only
    default_guidance_2: float | None = None  # two-expert Wan: guidance of the low-noise expert
    fps: tuple[int, ...] = ()
    default_fps: int | None = None


@dataclass(frozen=True)
class LayerDims:
    """Enough of the transformer's config to tell whether a LoRA's layers fit, before any GPU time."""

    architecture: str  # "wan" | "flux"
    hidden: int
    ffn: int
    layers: int
    single_layers: int = 0  # flux


@dataclass(frozen=True)
class DeclaredComponent:
    """A component's published parameter count, used by the memory planner when its weights are not on disk."""

    params: int
    blocks: int = 0  # top-level transformer blocks (group offload moves one at a time); 0: the component moves whole
    largest_block_params: int = 0  # when blocks differ in size (Flux double vs single blocks); 0: params / blocks


# Values `placement:` and `storage_dtype:` accept ("" = let the planner choose / keep the compute dtype); the
# planner in generation/runtime/memory_plan.py documents what each means.
PLACEMENT_CHOICES = ("", *PLACEMENTS)
STORAGE_DTYPE_CHOICES = ("", *STORAGE_DTYPES)
IMAGE_INPUT_CHOICES = ("", "required", "optional")


@dataclass(frozen=True)
class BaseModel:
    key: str
    display_name: str
    family: str  # same vocabulary as LoRA.base_model
    kind: str  # "image" | "video"
    pipeline_class: str
    path: Path
    experts: dict[str, str]
    capabilities: Capabilities
    dims: LayerDims
    enabled: bool = True
    demo: bool = False
    description: str = ""
    compatible_families: tuple[str, ...] = field(default=())
    placement: str = ""  # "" = the fastest that fits (memory_plan.plan)
    storage_dtype: str = ""  # "fp8": transformers stored in float8 through diffusers' layerwise casting
    component_params: dict[str, DeclaredComponent] = field(default_factory=dict)  # used when weights are absent
    vae_scale: int = 8  # pixels per latent pixel along each side
    vae_decode_channels: int = 96  # feature channels per output pixel in the VAE decoder's last stage
    # Whether a job takes an input image (generation/inputs.py): "required" (image-to-video), "optional" or "".
    image_input: str = ""

    @property
    def two_experts(self) -> bool:
        return "low" in self.experts

    @property
    def weights_present(self) -> bool:
        return (self.path / "model_index.json").is_file()

    @property
    def families(self) -> tuple[str, ...]:
        return (self.family, *self.compatible_families)

    @property
    def variant(self) -> str:
        """ "i2v" for image-to-video models (their transformer reads image latents too), "t2v" otherwise."""
        return "i2v" if self.image_input == "required" else "t2v"


WAN_VIDEO_STEPS = (1, 80)


def _image_to_video(t2v: BaseModel, *, key: str, display_name: str, path: Path, description: str) -> BaseModel:
    """Wan 2.2 I2V beside its T2V model: the same experts, layer shapes and limits; its own pipeline, guidance
    and a required input image."""
    return replace(
        t2v,
        key=key,
        display_name=display_name,
        pipeline_class="WanImageToVideoPipeline",
        path=path,
        capabilities=replace(t2v.capabilities, default_guidance=3.5, default_guidance_2=3.5),
        image_input="required",
        description=description,
    )


def _defaults(models_dir: Path) -> list[BaseModel]:
    t2v = BaseModel(
        key="wan22-t2v-a14b",
        display_name="Wan 2.2 T2V-A14B",
        family="wan-14b",
        kind="video",
        pipeline_class="WanPipeline",
        path=models_dir / "Wan2.2-T2V-A14B-Diffusers",
        experts=TWO_EXPERTS,
        capabilities=Capabilities(
            resolutions=((1280, 720), (720, 1280), (832, 480), (480, 832)),
            steps=WAN_VIDEO_STEPS,
            default_steps=40,
            default_guidance=4.0,
            default_guidance_2=3.0,
            frame_counts=(33, 49, 81, 121),
            fps=(16, 24),
            default_fps=16,
        ),
        dims=LayerDims("wan", hidden=5120, ffn=13824, layers=40),
        component_params={
            "transformer": DeclaredComponent(14_290_000_000, blocks=40),
            "transformer_2": DeclaredComponent(14_290_000_000, blocks=40),
            "text_encoder": DeclaredComponent(5_680_000_000),  # UMT5-XXL encoder
            "vae": DeclaredComponent(127_000_000),  # Wan 2.1 VAE
        },
        description="Two experts: high-noise LoRAs go into transformer, low-noise into transformer_2.",
    )
    t2v_demo = BaseModel(
        key="wan22-a14b-demo",
        display_name="Wan 2.2 A14B (demo)",
        family="wan-demo",
        kind="video",
        pipeline_class="WanPipeline",
        path=models_dir / "wan22-a14b-demo",
        experts=TWO_EXPERTS,
        capabilities=Capabilities(
            resolutions=((32, 32), (48, 32)),
            steps=(1, 10),
            default_steps=4,
            default_guidance=4.0,
            default_guidance_2=3.0,
            frame_counts=(5, 9),
            fps=(8,),
            default_fps=8,
        ),
        dims=LayerDims("wan", hidden=24, ffn=32, layers=2),
        demo=True,
        description="Tiny random-weight WanPipeline with transformer + transformer_2 (built offline).",
    )
    return [
        t2v,
        _image_to_video(
            t2v,
            key="wan22-i2v-a14b",
            display_name="Wan 2.2 I2V-A14B",
            path=models_dir / "Wan2.2-I2V-A14B-Diffusers",
            description="Image to video. Two experts like T2V; the input image is the first frame.",
        ),
        BaseModel(
            key="wan22-ti2v-5b",
            display_name="Wan 2.2 TI2V-5B",
            family="wan-5b",
            kind="video",
            pipeline_class="WanPipeline",
            path=models_dir / "Wan2.2-TI2V-5B-Diffusers",
            experts=ONE_EXPERT,
            capabilities=Capabilities(
                resolutions=((1280, 704), (704, 1280)),
                steps=WAN_VIDEO_STEPS,
                default_steps=50,
                default_guidance=5.0,
                frame_counts=(49, 81, 121),
                fps=(24,),
                default_fps=24,
            ),
            dims=LayerDims("wan", hidden=3072, ffn=14336, layers=30),
            component_params={
                "transformer": DeclaredComponent(5_000_000_000, blocks=30),
                "text_encoder": DeclaredComponent(5_680_000_000),  # UMT5-XXL encoder
                "vae": DeclaredComponent(705_000_000),  # Wan 2.2 VAE (16x16x4 compression)
            },
            vae_scale=16,
            vae_decode_channels=64,  # 256 channels at half resolution, unpatchified 2x2
            image_input="optional",
        ),
        BaseModel(
            key="flux1-dev",
            display_name="FLUX.1-dev",
            family="flux",
            kind="image",
            pipeline_class="FluxPipeline",
            path=models_dir / "FLUX.1-dev",
            experts=ONE_EXPERT,
            capabilities=Capabilities(
                resolutions=((1024, 1024), (1344, 768), (768, 1344), (1152, 896), (896, 1152)),
                steps=(1, 50),
                default_steps=28,
                default_guidance=3.5,
            ),
            dims=LayerDims("flux", hidden=3072, ffn=12288, layers=19, single_layers=38),
            component_params={
                "transformer": DeclaredComponent(11_900_000_000, blocks=57, largest_block_params=340_000_000),
                "text_encoder_2": DeclaredComponent(4_760_000_000),  # T5-XXL encoder
                "text_encoder": DeclaredComponent(123_000_000),  # CLIP-L
                "vae": DeclaredComponent(84_000_000),
            },
            vae_decode_channels=128,
            description="Also FLUX.1 Krea [dev]: point the path at its snapshot.",
        ),
        t2v_demo,
        _image_to_video(
            t2v_demo,
            key="wan22-i2v-a14b-demo",
            display_name="Wan 2.2 I2V-A14B (demo)",
            path=models_dir / "wan22-i2v-a14b-demo",
            description="Tiny random-weight WanImageToVideoPipeline with transformer + transformer_2 (built offline).",
        ),
        BaseModel(
            key="wan-ti2v-demo",
            display_name="Wan single expert (demo)",
            family="wan-demo",
            kind="video",
            pipeline_class="WanPipeline",
            path=models_dir / "wan-ti2v-demo",
            experts=ONE_EXPERT,
            capabilities=Capabilities(
                resolutions=((32, 32),),
                steps=(1, 10),
                default_steps=4,
                default_guidance=5.0,
                frame_counts=(5, 9),
                fps=(8,),
                default_fps=8,
            ),
            dims=LayerDims("wan", hidden=24, ffn=32, layers=2),
            demo=True,
            image_input="optional",
            description="Tiny random-weight single-expert WanPipeline like TI2V-5B (built offline).",
        ),
        BaseModel(
            key="flux-demo",
            display_name="FLUX (demo)",
            family="flux-demo",
            kind="image",
            pipeline_class="FluxPipeline",
            path=models_dir / "flux-demo",
            experts=ONE_EXPERT,
            capabilities=Capabilities(
                resolutions=((32, 32), (64, 64)), steps=(1, 10), default_steps=4, default_guidance=3.5
            ),
            dims=LayerDims("flux", hidden=32, ffn=128, layers=1, single_layers=1),
            demo=True,
            description="Tiny random-weight FluxPipeline (built offline).",
        ),
    ]


def _apply_overrides(models: dict[str, BaseModel], overrides: dict) -> dict[str, BaseModel]:
    for key, values in (overrides or {}).items():
        values = dict(values)
        if "path" in values:
            values["path"] = Path(values["path"])
        if "capabilities" in values:
            base = models[key].capabilities if key in models else None
            caps = {
                k: tuple(map(tuple, v)) if k == "resolutions" else (tuple(v) if isinstance(v, list) else v)
                for k, v in values.pop("capabilities").items()
            }
            values["capabilities"] = replace(base, **caps) if base else Capabilities(**caps)
        if "dims" in values:
            values["dims"] = LayerDims(**values["dims"])
        if "component_params" in values:
            values["component_params"] = {
                name: DeclaredComponent(**declared) if isinstance(declared, dict) else DeclaredComponent(int(declared))
                for name, declared in values["component_params"].items()
            }
        _check_choice(key, values, "placement", PLACEMENT_CHOICES)
        _check_choice(key, values, "storage_dtype", STORAGE_DTYPE_CHOICES)
        _check_choice(key, values, "image_input", IMAGE_INPUT_CHOICES)
        models[key] = replace(models[key], **values) if key in models else BaseModel(key=key, **values)
    return models


def _check_choice(key: str, values: dict, name: str, choices: tuple[str, ...]) -> None:
    if name in values:
        values[name] = values[name] or ""  # YAML `placement:` with no value means "not forced"
        if values[name] not in choices:
            raise ImproperlyConfigured(
                f"LORASITE_MODELS_FILE: {key}.{name} is {values[name]!r}; expected one of "
                f"{', '.join(repr(c) for c in choices if c)} (or leave it out)."
            )


@functools.cache
def _registry(models_dir: str, models_file: str) -> dict[str, BaseModel]:
    models = {model.key: model for model in _defaults(Path(models_dir))}
    if models_file:
        models = _apply_overrides(models, yaml.safe_load(Path(models_file).read_text()))
    return models


def model_registry() -> dict[str, BaseModel]:
    return _registry(str(settings.LORASITE_MODELS_DIR), settings.LORASITE_MODELS_FILE)


def model_get(key: str) -> BaseModel:
    model = model_registry().get(key)
    if model is None or not model.enabled:
        raise InvalidInput(f"Unknown model '{key}'.", errors={"model": [f"Unknown or disabled model '{key}'."]})
    return model


def model_as_dict(model: BaseModel) -> dict:
    data = asdict(model)
    data["path"] = str(model.path)
    data["weights_present"] = model.weights_present
    data["two_experts"] = model.two_experts
    return data


# --- does a LoRA fit the model's layers? --------------------------------------------------------
# The LoRA's modules are diffusers' own names after its key conversion, stored per component by the ingest
# task (generation/runtime/lora_keys.py), so no name table is needed here: only which block stacks the model
# has, how many blocks each, and how wide their layers read.
_BLOCK_STACK = re.compile(r"^(?P<stack>blocks|transformer_blocks|single_transformer_blocks)\.(?P<index>\d+)\.")
# Layers only image-to-video Wan transformers have, as diffusers names them: Wan 2.1 I2V's CLIP image branch
# (k_img/v_img → attn2.add_k_proj/add_v_proj, img_emb → condition_embedder.image_embedder), and the patch embedding
# when it reads 36 channels (16 noise + 16 image latents + 4 mask) rather than T2V's 16.
_IMAGE_CONDITIONING = re.compile(r"(^|\.)(attn2\.add_[kv]_proj|condition_embedder\.image_embedder)(\.|$)")
WAN_I2V_PATCH_CHANNELS = 36


def _image_conditioning_layer(module_shapes: dict[str, dict[str, list[int]]]) -> str | None:
    for module, shape in sorted(module_shapes.get("transformer", {}).items()):
        if _IMAGE_CONDITIONING.search(module) or (module == "patch_embedding" and shape[0] == WAN_I2V_PATCH_CHANNELS):
            return module
    return None


def lora_variants(module_shapes: dict[str, dict[str, list[int]]]) -> tuple[str, ...]:
    """The Wan variants a LoRA fits: ("t2v", "i2v"), or ("i2v",) when it carries image-conditioning layers.

    T2V LoRAs load onto I2V models (the same blocks; I2V's extra inputs are only in layers they do not touch), but a
    LoRA with image-conditioning layers needs the layers that only I2V transformers have."""
    return ("i2v",) if _image_conditioning_layer(module_shapes) else ("t2v", "i2v")


def lora_wan_variants(*, family: str, module_shapes: dict[str, dict[str, list[int]]]) -> list[str]:
    """lora_variants of a LoRA of a family some Wan model of the registry takes; [] for any other family."""
    if not any(m.dims.architecture == "wan" and family in m.families for m in model_registry().values()):
        return []
    return list(lora_variants(module_shapes))


def _i2v_names(model: BaseModel) -> str:
    names = [m.display_name for m in model_registry().values() if m.variant == "i2v" and m.family in model.families]
    return " or ".join(names) or "an image-to-video model"


def family_fits(family: str, model: BaseModel) -> bool:
    """A LoRA detected as `family` may go on `model`: the family is one of the model's, or unknown (then only the
    layer check, `lora_fit_problem`, decides). The rule jobs, the picker and the LoRA page's "Models it fits" share."""
    return family == "unknown" or family in model.families


def lora_fit_problem(module_shapes: dict[str, dict[str, list[int]]], model: BaseModel) -> str | None:
    """The first transformer layer of the LoRA that cannot fit the model, as a sentence; None when all fit.

    Every LoRA'd linear layer inside a block reads the residual stream (`hidden` features), the feed-forward's
    inner width (`ffn`) or, in Flux's single blocks, both concatenated. Layers outside the blocks (embedders,
    output projection) and other components are left to the loader, which skips what does not match. A LoRA with
    image-conditioning layers (lora_variants) fits only image-to-video models.
    """
    dims = model.dims
    if dims.architecture == "wan" and model.variant != "i2v" and (layer := _image_conditioning_layer(module_shapes)):
        return f"it is an image-to-video LoRA ({layer}): requires {_i2v_names(model)}"
    if dims.architecture == "wan":
        block_counts, in_widths = {"blocks": dims.layers}, (dims.hidden, dims.ffn)
    else:
        block_counts = {"transformer_blocks": dims.layers, "single_transformer_blocks": dims.single_layers}
        in_widths = (dims.hidden, dims.ffn, dims.hidden + dims.ffn)
    for module, shape in sorted(module_shapes.get("transformer", {}).items()):
        match = _BLOCK_STACK.match(module)
        if not match or _IMAGE_CONDITIONING.search(module):  # image layers: left to the loader on an I2V model
            continue
        count = block_counts.get(match["stack"])
        if count is None:
            return f"it targets {module} but {model.display_name} has no {match['stack']}"
        if int(match["index"]) >= count:
            return f"it targets {module} but {model.display_name} has {count} blocks"
        if shape[0] not in in_widths:
            widths = " or ".join(map(str, in_widths))
            return (
                f"{module} is {shape[0]}→{shape[1]} in the LoRA but the block layers of {model.display_name} "
                f"read {widths} features"
            )
    return None
