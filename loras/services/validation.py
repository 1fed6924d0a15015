"""What a client may send and do before a byte is stored: the declared file, the header, the roles."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from loras.filenames import extension_of, sanitize_filename
from loras.lora_inspect import LoraInspection, NotALoRA, inspect_lora
from loras.models import LoRA
from loras.safetensors_header import HeaderError, read_header
from loras.selectors import human_size, lora_can_edit, lora_can_upload
from loras.training import training_record_clean
from lorasite.errors import InvalidInput, PayloadTooLarge, Unprocessable
from lorasite.validators import refuse_bidi_controls
from workspaces.models import Membership, Role
from workspaces.services import require_role

LORA_EXTENSION = ".safetensors"
PICKLE_EXTENSIONS = {".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"}


@dataclass(frozen=True)
class LoRAOptions:
    """What the user may say about a new LoRA; everything else is read from the file."""

    name: str = ""
    version: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    expert: str = ""
    preferred_weight: float | None = None
    training: dict = field(default_factory=dict)  # the training record (loras/training.py)

    def __post_init__(self) -> None:
        refuse_bidi_controls(self.name, field="name")
        refuse_bidi_controls(self.version, field="version")
        # Checked here, so that a bad record is refused before a byte is stored.
        object.__setattr__(self, "training", training_record_clean(self.training))


def check_declared_file(*, filename: str, size: int | None) -> None:
    """Refuse by name and declared size before a byte is accepted."""
    refuse_bidi_controls(filename, field="file")
    extension = extension_of(filename)
    if extension in PICKLE_EXTENSIONS:
        raise InvalidInput(
            f"'{filename}' is a pickle checkpoint ({extension}). Pickle files can run code when loaded, so lorasite "
            "only stores .safetensors. Convert it on a trusted machine: "
            'python -c "import torch, safetensors.torch as st; '
            "st.save_file(torch.load('in.pt', weights_only=True), 'out.safetensors')\"",
            errors={"file": ["Pickle formats (.ckpt, .pt, .bin) are not accepted; convert to .safetensors."]},
        )
    if extension != LORA_EXTENSION:
        raise InvalidInput(
            f"'{filename}' is not a .safetensors file.",
            errors={"file": ["Only .safetensors files are accepted."]},
        )
    if size is None:
        return
    if size < 1:
        raise Unprocessable("This is not a LoRA: the file is empty.", errors={"file": ["The file is empty."]})
    limit = settings.LORASITE_MAX_LORA_BYTES
    if size > limit:
        raise PayloadTooLarge(
            f"The file is {human_size(size)}; the limit is {human_size(limit)} (LORASITE_MAX_LORA_BYTES).",
            errors={"size": [f"Larger than the {human_size(limit)} limit."]},
        )


def check_app_upload_size(size: int) -> None:
    """Through the app the whole file crosses one request, which must end within the web worker's timeout;
    larger files go straight to storage with the multipart upload."""
    limit = settings.LORASITE_MAX_APP_UPLOAD_BYTES
    if size > limit:
        raise PayloadTooLarge(
            f"The file is {human_size(size)}; uploads through the app are limited to {human_size(limit)} "
            "(LORASITE_MAX_APP_UPLOAD_BYTES). Send larger files with the multipart upload (POST …/loras/uploads/).",
            errors={"file": [f"Larger than the {human_size(limit)} limit for uploads through the app."]},
            limit_bytes=limit,
        )


def inspect_stored_header(read_range: Callable[[int, int], bytes], *, size: int, filename: str) -> LoraInspection:
    """Parse and inspect the header with ranged reads only; a bad file becomes a 422 naming the problem."""
    try:
        header = read_header(read_range, file_size=size)
        return inspect_lora(header, filename=filename, read_range=read_range)
    except HeaderError as error:
        raise Unprocessable(f"This is not a valid safetensors file: {error}", errors={"file": [str(error)]}) from None
    except NotALoRA as error:
        raise Unprocessable(str(error), errors={"file": [str(error)]}) from None


def lora_object_directory(*, workspace_id: int, directory: str) -> str:
    return f"workspaces/{workspace_id}/loras/{directory}/"


def lora_object_key(*, workspace_id: int, filename: str, directory: str | None = None) -> str:
    # The path is ours, never the user's: a fresh uuid directory (a multipart upload's own id) and a sanitized name.
    directory = directory or uuid.uuid4().hex
    return lora_object_directory(workspace_id=workspace_id, directory=directory) + sanitize_filename(filename)


def require_uploader(actor: Membership) -> None:
    if not lora_can_upload(actor=actor):
        require_role(membership=actor, minimum=Role.MEMBER, action="upload LoRAs")


def require_editor(actor: Membership, lora: LoRA) -> None:
    if not lora_can_edit(actor=actor, lora=lora):
        require_role(membership=actor, minimum=Role.ADMIN, action="change LoRAs uploaded by someone else")


def clean_list(values, *, field: str, max_items: int = 50, max_length: int = 64) -> list[str]:
    cleaned: list[str] = []
    for value in values or []:
        text = " ".join(str(value).split())
        if not text:
            continue
        if len(text) > max_length:
            raise InvalidInput(
                f"A {field[:-1]} is longer than {max_length} characters.",
                errors={field: [f"'{text[:20]}…' is too long."]},
            )
        if text.lower() not in {c.lower() for c in cleaned}:
            cleaned.append(text)
    if len(cleaned) > max_items:
        raise InvalidInput(f"At most {max_items} {field}.", errors={field: [f"At most {max_items} {field}."]})
    return cleaned
