"""Training provenance: the one table of training parameters, the `LoRA.training` record and the Configuration tab.

A LoRA's training configuration comes from two places: what its file's kohya `ss_*` metadata holds (read at ingest
into `LoRA.training_metadata` under the readable names of `loras.lora_inspect`) and the `training` record a member
gives at upload or edits later — dataset name or link, base model version and hyperparameters. The record's values
win over the file's: the member is correcting or completing it. `PARAMETERS` is the one truth of what each parameter
is (its category, label and help with the typical range); the record accepts only these keys, and the
Configuration tab, the versions list's headline and the API all read through it."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lorasite.errors import InvalidInput

CATEGORIES = ("Model", "LoRA", "Training", "Hardware", "Checkpointing", "DPO")
OPTIONAL_CATEGORIES = frozenset({"DPO"})  # shown only when a parameter of theirs is set


@dataclass(frozen=True)
class Parameter:
    category: str
    label: str
    help: str  # what it is and its typical range: the tooltip
    kind: str  # "number" | "integer" | "boolean" | "list" | "text"


PARAMETERS: dict[str, Parameter] = {
    # Model
    "base_model": Parameter("Model", "Base model", "The checkpoint the LoRA was trained on.", "text"),
    "base_model_version": Parameter(
        "Model", "Base model version", "Which release of the base model, e.g. Wan 2.2 T2V-A14B or SDXL 1.0.", "text"
    ),
    "architecture": Parameter("Model", "Architecture", "The modelspec architecture id the file declares.", "text"),
    "title": Parameter("Model", "Title", "The modelspec title the file declares.", "text"),
    "author": Parameter("Model", "Author", "Who trained it, as the file says.", "text"),
    "resolution": Parameter(
        "Model", "Resolution", "Training size in pixels; typically 512–1024 for images, 480p–720p for video.", "text"
    ),
    "clip_skip": Parameter(
        "Model", "CLIP skip", "Text-encoder layers skipped from the end; 1 or 2 (SD 1.5).", "integer"
    ),
    # LoRA
    "network_module": Parameter(
        "LoRA", "Network module", "The adapter implementation, e.g. networks.lora or lycoris.kohya.", "text"
    ),
    "network_dim": Parameter(
        "LoRA",
        "Rank",
        "Inner size of the low-rank matrices; typically 4–128. Higher learns more, the file grows.",
        "integer",
    ),
    "network_alpha": Parameter(
        "LoRA", "Alpha", "Scales the update by alpha ÷ rank; typically rank ÷ 2 up to rank.", "number"
    ),
    "network_args": Parameter("LoRA", "Network arguments", "Extra options of the network module.", "text"),
    "target_modules": Parameter(
        "LoRA", "Target modules", "The layers the adapter changes, e.g. to_q, to_k, to_v, to_out.0.", "list"
    ),
    "lora_dropout": Parameter("LoRA", "Dropout", "Dropout on the adapter's path; typically 0–0.1.", "number"),
    # Training
    "learning_rate": Parameter(
        "Training",
        "Learning rate",
        "The optimizer's step size; typically 1e-5 to 1e-3 for LoRAs (1e-4 is common).",
        "number",
    ),
    "unet_learning_rate": Parameter(
        "Training", "Denoiser learning rate", "Learning rate of the UNet/transformer; typically 1e-5 to 1e-3.", "number"
    ),
    "text_encoder_learning_rate": Parameter(
        "Training", "Text encoder learning rate", "Usually lower than the denoiser's, 1e-5 to 5e-5, or 0.", "number"
    ),
    "optimizer": Parameter("Training", "Optimizer", "e.g. AdamW8bit, Prodigy, Adafactor.", "text"),
    "lr_scheduler": Parameter("Training", "LR scheduler", "How the learning rate changes: constant, cosine…", "text"),
    "lr_warmup_steps": Parameter(
        "Training", "Warm-up steps", "Steps ramping the rate up; typically 0–10 %.", "integer"
    ),
    "epochs": Parameter("Training", "Epochs", "Passes over the dataset planned; typically 5–30.", "integer"),
    "epoch": Parameter("Training", "Epoch reached", "The epoch this file was saved at.", "integer"),
    "steps": Parameter(
        "Training", "Steps", "Optimizer steps done when the file was saved; typically 500–5,000.", "integer"
    ),
    "max_steps": Parameter("Training", "Max steps", "Steps planned for the whole run.", "integer"),
    "batch_size": Parameter("Training", "Batch size", "Samples per optimizer step; typically 1–8.", "integer"),
    "gradient_accumulation_steps": Parameter(
        "Training",
        "Gradient accumulation",
        "Batches summed per step: a larger effective batch; typically 1–4.",
        "integer",
    ),
    "train_images": Parameter("Training", "Dataset size", "Training images or clips (before repeats).", "integer"),
    "regularization_images": Parameter(
        "Training", "Regularization images", "Class images that keep the base model's prior; often 0.", "integer"
    ),
    "noise_offset": Parameter(
        "Training", "Noise offset", "Helps very dark and bright images; typically 0–0.1.", "number"
    ),
    "seed": Parameter("Training", "Seed", "The random seed of the run.", "integer"),
    "comment": Parameter("Training", "Comment", "The trainer's note.", "text"),
    # Hardware
    "mixed_precision": Parameter(
        "Hardware", "Mixed precision", "Number format of the training math: bf16 (typical), fp16 or no.", "text"
    ),
    "gradient_checkpointing": Parameter(
        "Hardware", "Gradient checkpointing", "Recomputes activations to save memory, about 20–30 % slower.", "boolean"
    ),
    "gpu": Parameter("Hardware", "GPU", "The accelerator trained on, e.g. 1× H100 80 GB.", "text"),
    "num_gpus": Parameter("Hardware", "GPUs", "How many accelerators; typically 1–8.", "integer"),
    # Checkpointing
    "output_name": Parameter("Checkpointing", "Output name", "The name the trainer saved the file under.", "text"),
    "save_every_n_epochs": Parameter(
        "Checkpointing", "Save every n epochs", "Checkpoint interval; typically 1–5.", "integer"
    ),
    "save_every_n_steps": Parameter("Checkpointing", "Save every n steps", "Checkpoint interval in steps.", "integer"),
    "save_precision": Parameter(
        "Checkpointing", "Save precision", "Data type of the saved weights: fp16, bf16, fp32.", "text"
    ),
    "started_at": Parameter("Checkpointing", "Training started", "When the run began (from the file).", "text"),
    "finished_at": Parameter(
        "Checkpointing", "Training finished", "When this file was written (from the file).", "text"
    ),
    # DPO (preference tuning): only some runs
    "dpo_beta": Parameter(
        "DPO",
        "DPO β",
        "How strongly the preference loss pulls from the reference model; Diffusion-DPO uses 2,000–5,000.",
        "number",
    ),
    "dpo_reference_model": Parameter(
        "DPO", "Reference model", "The frozen model the preferences are measured against.", "text"
    ),
    "dpo_pairs": Parameter("DPO", "Preference pairs", "Chosen/rejected pairs in the preference dataset.", "integer"),
}

RECORD_FIELDS = ("dataset", "dataset_link", "base_model_version", "hyperparameters")
TEXT_MAX = 500


def _clean_value(key: str, value: Any) -> Any:
    kind = PARAMETERS[key].kind
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("a boolean (true or false)")
        return value
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError("a number")
        if kind == "integer" and value != int(value):
            raise ValueError("a whole number")
        return int(value) if kind == "integer" else value
    if kind == "list":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ValueError("a list of names")
        return value[:200]
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError("text")
    text = str(value).strip()
    if len(text) > TEXT_MAX:
        raise ValueError(f"at most {TEXT_MAX} characters")
    return text


def training_record_clean(record: Any) -> dict:
    """The `training` record as stored, or InvalidInput naming every problem (keys as `training.<field>`):
    dataset (name), dataset_link (http or https URL), base_model_version and hyperparameters (PARAMETERS keys
    only, each of its kind). Empty values are left out; {} clears the record."""
    if not isinstance(record, Mapping):
        raise InvalidInput("training: give an object.", errors={"training": ["Give an object."]})
    problems: dict[str, list[str]] = {}
    for key in record:
        if key not in RECORD_FIELDS:
            problems[f"training.{key}"] = [f"Unknown field; the record has {', '.join(RECORD_FIELDS)}."]
    cleaned: dict[str, Any] = {}
    for key in ("dataset", "dataset_link", "base_model_version"):
        value = record.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str) or len(value) > TEXT_MAX:
            problems[f"training.{key}"] = [f"Text of at most {TEXT_MAX} characters."]
            continue
        cleaned[key] = value.strip()
    link = cleaned.get("dataset_link")
    if link is not None:
        parts = urlsplit(link)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems["training.dataset_link"] = ["An http:// or https:// link."]
    hyperparameters = record.get("hyperparameters") or {}
    if not isinstance(hyperparameters, Mapping):
        problems["training.hyperparameters"] = ["An object of parameter → value."]
        hyperparameters = {}
    clean_parameters = {}
    for key, value in hyperparameters.items():
        if key not in PARAMETERS:
            problems[f"training.hyperparameters.{key}"] = ["Unknown parameter; see the Configuration tab's names."]
            continue
        if value in (None, ""):
            continue
        try:
            clean_parameters[key] = _clean_value(key, value)
        except ValueError as exc:
            problems[f"training.hyperparameters.{key}"] = [f"Give {exc}."]
    if problems:
        field, messages = next(iter(problems.items()))
        raise InvalidInput(f"{field}: {messages[0]}", errors=problems)
    if clean_parameters:
        cleaned["hyperparameters"] = clean_parameters
    return cleaned


# --- reading: the merged configuration, its display and the versions headline ---------------------------------


def training_values(*, training_metadata: Mapping, training: Mapping) -> dict[str, Any]:
    """Parameter → value: the file's metadata, then the record (which wins); only PARAMETERS keys."""
    values = {key: value for key, value in training_metadata.items() if key in PARAMETERS}
    if training.get("base_model_version"):
        values["base_model_version"] = training["base_model_version"]
    values.update(training.get("hyperparameters") or {})
    if "train_images" not in values:  # older kohya files: the dataset folders' counts only
        counts = [info.get("img_count") for info in (training_metadata.get("dataset_dirs") or {}).values()]
        if counts and all(isinstance(count, int) for count in counts):
            values["train_images"] = sum(counts)
    return values


def format_value(value: Any, kind: str) -> str:
    """Numbers at a sensible precision (1e-4, 0.05, 1,200), booleans Yes/No, lists comma-separated."""
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, bool) or kind == "boolean":
        return "Yes" if value else "No"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float) and kind != "integer":
        if value != 0 and abs(value) < 1e-2:
            mantissa, exponent = f"{value:.2e}".split("e")
            return f"{float(mantissa):g}e{int(exponent)}"
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, (int, float)):
        return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items())
    return str(value)


@dataclass(frozen=True)
class ConfigRow:
    key: str
    label: str
    help: str
    value: str  # formatted; "" means Not set


@dataclass(frozen=True)
class ConfigGroup:
    category: str
    rows: tuple[ConfigRow, ...]


def training_configuration(*, training_metadata: Mapping, training: Mapping) -> list[ConfigGroup]:
    """The Configuration tab: every parameter of each category, set or "Not set", in the table's order; the DPO
    group only when one of its parameters is set; [] when nothing at all is known (the tab says so instead)."""
    values = training_values(training_metadata=training_metadata, training=training)
    if not values:
        return []
    groups = []
    for category in CATEGORIES:
        rows = tuple(
            ConfigRow(key, parameter.label, parameter.help, format_value(values.get(key), parameter.kind))
            for key, parameter in PARAMETERS.items()
            if parameter.category == category
        )
        if category in OPTIONAL_CATEGORIES and not any(row.value for row in rows):
            continue
        groups.append(ConfigGroup(category, rows))
    return groups


def training_headline(*, training_metadata: Mapping, training: Mapping) -> dict[str, Any]:
    """Epochs, steps, learning rate and dataset size where known (the versions list), raw values and one text:
    "10 epochs · 2,000 steps · LR 1e-4 · 40 images"."""
    values = training_values(training_metadata=training_metadata, training=training)
    epochs = values.get("epochs", values.get("epoch"))
    steps = values.get("steps", values.get("max_steps"))
    headline = {
        "epochs": epochs,
        "steps": steps,
        "learning_rate": values.get("learning_rate"),
        "dataset_size": values.get("train_images"),
    }
    parts = []
    if epochs is not None:
        parts.append(f"{format_value(epochs, 'integer')} epoch{'s' if epochs != 1 else ''}")
    if steps is not None:
        parts.append(f"{format_value(steps, 'integer')} steps")
    if headline["learning_rate"] is not None:
        parts.append(f"LR {format_value(float(headline['learning_rate']), 'number')}")
    if headline["dataset_size"] is not None:
        parts.append(f"{format_value(headline['dataset_size'], 'integer')} images")
    headline["text"] = " · ".join(parts)
    return headline
