"""Register a PEFT checkpoint: `adapter_config.json` + `adapter_model.safetensors`, as two files or one .zip.

What `peft`'s `save_pretrained` writes is not a file diffusers loads as it is: its keys sit under PEFT's
`base_model.model.` and the scale (lora_alpha ÷ r) is only in the config. So the config is validated as a PEFT LoRA
config (peft_type LORA, r, lora_alpha, target_modules) and the weights file is rewritten the way diffusers'
`save_lora_weights` writes one — keys under `transformer.`, the config as `lora_adapter_metadata` — by renaming
header entries only: the tensor bytes are copied unchanged. The result goes through the ordinary through-the-app
ingest (header checks, quota, duplicate, coverage). Rank, alpha and target modules come from the config and also
fill the training record's hyperparameters. Every refusal is a 400 naming the problem, before anything is stored;
temporary files are removed whatever happens."""

import json
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from loras.models import LoRA
from loras.safetensors_header import HeaderError, read_header_from_path
from loras.services.ingest import lora_ingest_local_file
from loras.services.validation import LoRAOptions, check_app_upload_size, require_uploader
from lorasite.errors import InvalidInput
from workspaces.models import Membership

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_MAX_BYTES = 1024 * 1024
PEFT_PREFIX = "base_model.model."
COMPONENT = "transformer"  # the denoiser of every family lorasite generates with (Wan, FLUX)
COPY_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class PeftConfig:
    r: int
    lora_alpha: float
    target_modules: list[str]
    lora_dropout: float | None
    base_model: str

    @property
    def adapter_metadata(self) -> dict:
        """The LoraConfig kwargs diffusers reads back from `lora_adapter_metadata`, per component."""
        config = {"r": self.r, "lora_alpha": self.lora_alpha, "target_modules": self.target_modules}
        return {f"{COMPONENT}.{key}": value for key, value in config.items()}

    @property
    def training(self) -> dict:
        hyperparameters = {
            "network_dim": self.r,
            "network_alpha": self.lora_alpha,
            "target_modules": self.target_modules,
        }
        if self.lora_dropout is not None:
            hyperparameters["lora_dropout"] = self.lora_dropout
        record: dict = {"hyperparameters": hyperparameters}
        if self.base_model:
            record["base_model_version"] = self.base_model[:500]
        return record


def _refuse(message: str, field: str = "adapter_config") -> InvalidInput:
    return InvalidInput(message, errors={field: [message]})


def peft_config_parse(raw: bytes) -> PeftConfig:
    """The config as PeftConfig, or a 400 naming what makes it not a PEFT LoRA config."""
    if len(raw) > CONFIG_MAX_BYTES:
        raise _refuse(f"{CONFIG_NAME} is over {CONFIG_MAX_BYTES // 1024} KiB; a PEFT config is a few hundred bytes.")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(f"{CONFIG_NAME} is not JSON: {exc}.") from None
    if not isinstance(config, dict):
        raise _refuse(f"{CONFIG_NAME} must hold a JSON object.")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        found = "no peft_type" if peft_type is None else f"peft_type {peft_type!r}"
        raise _refuse(f'{CONFIG_NAME} is not a PEFT LoRA config ({found}; expected "LORA").')
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise _refuse(f"{CONFIG_NAME}: r (the rank) must be a whole number ≥ 1, not {rank!r}.")
    alpha = config.get("lora_alpha", rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise _refuse(f"{CONFIG_NAME}: lora_alpha must be a number > 0, not {alpha!r}.")
    targets = config.get("target_modules")
    if isinstance(targets, str):
        targets = [targets]  # PEFT also takes one name or a regex
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise _refuse(f"{CONFIG_NAME}: target_modules must name the layers the adapter changes (a list of names).")
    dropout = config.get("lora_dropout")
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float))):
        raise _refuse(f"{CONFIG_NAME}: lora_dropout must be a number, not {dropout!r}.")
    base_model = config.get("base_model_name_or_path") or ""
    return PeftConfig(
        r=rank,
        lora_alpha=float(alpha),
        target_modules=sorted(targets),
        lora_dropout=None if dropout is None else float(dropout),
        base_model=base_model if isinstance(base_model, str) else "",
    )


def _diffusers_file(source: Path, target: Path, config: PeftConfig) -> None:
    """Write `source`'s tensors to `target` under diffusers' names with the config as metadata, copying the
    data section as it is (offsets are relative to it, so they do not change)."""
    try:
        header = read_header_from_path(source)
    except HeaderError as exc:
        raise _refuse(f"{WEIGHTS_NAME} is not a readable safetensors file: {exc}", field="file") from None
    entries: dict[str, object] = {}
    for name, tensor in header.tensors.items():
        bare = name.removeprefix(PEFT_PREFIX)
        if not bare.startswith(f"{COMPONENT}."):
            bare = f"{COMPONENT}.{bare}"
        entries[bare] = {"dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [tensor.start, tensor.end]}
    metadata = {
        **header.metadata,
        "format": "pt",
        "lora_adapter_metadata": json.dumps(config.adapter_metadata, sort_keys=True),
        "lora_alpha": str(config.lora_alpha),  # read by loras.lora_inspect as the file's alpha
    }
    raw = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    with open(source, "rb") as reader, open(target, "wb") as writer:
        writer.write(struct.pack("<Q", len(raw)))
        writer.write(raw)
        reader.seek(header.data_start)
        shutil.copyfileobj(reader, writer, COPY_CHUNK)


def _zip_member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The one member called `name` (at the top or in one folder); a 400 naming what is missing or doubled."""
    found = [info for info in archive.infolist() if not info.is_dir() and PurePosixPath(info.filename).name == name]
    if not found:
        raise _refuse(f"The .zip has no {name}; a PEFT checkpoint holds {CONFIG_NAME} and {WEIGHTS_NAME}.", "file")
    if len(found) > 1:
        raise _refuse(f"The .zip holds {len(found)} files named {name}; give one checkpoint per .zip.", "file")
    return found[0]


def _spill(uploaded_file, target: Path) -> None:
    with open(target, "wb") as writer:
        for chunk in uploaded_file.chunks():
            writer.write(chunk)


def lora_register_peft(
    *, actor: Membership, weights_file, config_file=None, options: LoRAOptions = LoRAOptions()
) -> LoRA:
    """Register a PEFT checkpoint uploaded through the app: `weights_file` is a .zip holding both files, or
    adapter_model.safetensors with `config_file` beside it. The LoRA's name defaults to the .zip's name (or the
    checkpoint's folder), and the config fills the training record where the options leave it empty."""
    require_uploader(actor)
    check_app_upload_size(weights_file.size)
    is_zip = weights_file.name.lower().endswith(".zip")
    if is_zip and config_file is not None:
        raise _refuse(f"Give either one .zip or {WEIGHTS_NAME} with {CONFIG_NAME}, not both.")
    if not is_zip and config_file is None:
        raise _refuse(f"A PEFT checkpoint needs its {CONFIG_NAME} (the adapter_config field) or one .zip.")
    with tempfile.TemporaryDirectory(prefix="peft-") as folder:
        weights = Path(folder) / WEIGHTS_NAME
        if is_zip:
            archive_path = Path(folder) / "checkpoint.zip"
            _spill(weights_file, archive_path)
            try:
                with zipfile.ZipFile(archive_path) as archive:
                    config_info = _zip_member(archive, CONFIG_NAME)
                    weights_info = _zip_member(archive, WEIGHTS_NAME)
                    if config_info.file_size > CONFIG_MAX_BYTES:
                        raise _refuse(f"{CONFIG_NAME} in the .zip is over {CONFIG_MAX_BYTES // 1024} KiB.")
                    # The declared size bounds what is extracted (a zip bomb stops at the app's upload limit).
                    check_app_upload_size(weights_info.file_size)
                    config_raw = archive.read(config_info)
                    with archive.open(weights_info) as reader, open(weights, "wb") as writer:
                        shutil.copyfileobj(reader, writer, COPY_CHUNK)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
                raise _refuse(f"The .zip cannot be read: {exc}.", "file") from None
            default_name = PurePosixPath(weights_file.name).stem
        else:
            if not weights_file.name.lower().endswith(".safetensors"):
                raise _refuse(f"The weights must be {WEIGHTS_NAME} (a .safetensors file) or a .zip.", "file")
            config_raw = config_file.read(CONFIG_MAX_BYTES + 1)
            _spill(weights_file, weights)
            default_name = ""
        config = peft_config_parse(config_raw)
        converted = Path(folder) / "converted.safetensors"
        _diffusers_file(weights, converted, config)
        # The options' record wins where it says something; the config fills in rank, alpha and target modules.
        given = options.training
        hyperparameters = {**config.training["hyperparameters"], **given.get("hyperparameters", {})}
        training = {**config.training, **given, "hyperparameters": hyperparameters}
        options = LoRAOptions(**{**vars(options), "name": options.name or default_name, "training": training})
        filename = f"{default_name or 'adapter_model'}.safetensors"
        return lora_ingest_local_file(actor=actor, path=converted, filename=filename, options=options)
