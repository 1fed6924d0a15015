"""Input images for image-to-video jobs: the upload, the check a job makes against its model, and the resize.

An upload (PNG, JPEG or WebP, at most LORASITE_INPUT_IMAGE_MAX_BYTES and LORASITE_INPUT_IMAGE_MAX_PIXELS) is
decoded in full with Pillow before anything is stored — with Pillow's decompression-bomb guard on — so a file that
is not an image, is truncated, is of another type or has too many pixels is a 400 naming why, and leaves nothing
behind. It is stored as sent under `workspaces/<id>/inputs/<uuid>.<ext>` and a `GenerationInput` row records it.

A job names the upload by id in `params.image`, with `params.image_fit` (IMAGE_FITS); `job_image_params` checks it
against the model's `image_input` ("required": image-to-video, "optional", "": refused) and returns what the job's
params keep: the id, the object key (the snapshot retry and recipes reuse) and the fit. The GPU worker then resizes
the image to the job's resolution with `image_fit_to` (plain Pillow, so the web process can run it too).
"""

from __future__ import annotations

import uuid
import warnings

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from PIL import Image, ImageOps, UnidentifiedImageError

from generation.model_registry import BaseModel
from generation.models import GenerationInput, GenerationJob
from loras.selectors import human_size
from lorasite.errors import InvalidInput, NotFound, PayloadTooLarge
from lorasite.object_store import get_object_store
from workspaces.models import Membership, Role
from workspaces.services import require_role

# Pillow's format name → (content type, the stored object's extension); anything else Pillow decodes is refused.
IMAGE_TYPES = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "WEBP": ("image/webp", "webp")}
# How the image meets the job's resolution: fit (all of it, letterboxed in black), fill (stretched to the frame),
# center-crop (scaled to cover the frame, the overflow cut evenly from both sides).
IMAGE_FITS = ("fit", "fill", "center-crop")
DEFAULT_IMAGE_FIT = "center-crop"


def input_prefix(workspace_id: int) -> str:
    return f"workspaces/{workspace_id}/inputs/"


def _refuse(problem: str) -> InvalidInput:
    return InvalidInput(problem, errors={"file": [problem]})


def _decode(uploaded: UploadedFile) -> tuple[str, int, int]:
    """(Pillow format, width, height) of a fully decoded upload; InvalidInput naming what is wrong otherwise."""
    max_pixels = settings.LORASITE_INPUT_IMAGE_MAX_PIXELS
    uploaded.seek(0)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make every bomb an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(uploaded) as image:
                if image.format not in IMAGE_TYPES:
                    raise _refuse(f"{image.format} images are not accepted; send a PNG, JPEG or WebP image.")
                if image.width * image.height > max_pixels:
                    raise _refuse(
                        f"The image is {image.width}×{image.height} ({image.width * image.height:,} pixels); input "
                        f"images are limited to {max_pixels:,} pixels."
                    )
                image.load()  # every pixel: a header that parses is not yet an image
                return image.format, image.width, image.height
    except UnidentifiedImageError as error:
        raise _refuse("The file is not an image Pillow can read; send a PNG, JPEG or WebP image.") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _refuse(f"The image has too many pixels to decode safely: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise _refuse(f"The image could not be decoded; it is truncated or corrupt ({error}).") from error


@transaction.atomic
def generation_input_create(*, actor: Membership, uploaded: UploadedFile) -> GenerationInput:
    """Check, store and record one input image (members and above: those who run generations)."""
    require_role(membership=actor, minimum=Role.MEMBER, action="upload input images")
    limit = settings.LORASITE_INPUT_IMAGE_MAX_BYTES
    if uploaded.size > limit:
        raise PayloadTooLarge(
            f"Input images are limited to {human_size(limit)}; this one is {human_size(uploaded.size)}.",
            errors={"file": ["Too large."]},
            limit_bytes=limit,
        )
    image_format, width, height = _decode(uploaded)
    content_type, extension = IMAGE_TYPES[image_format]
    row = GenerationInput(
        workspace_id=actor.workspace_id,
        created_by_id=actor.user_id,
        key=f"{input_prefix(actor.workspace_id)}{uuid.uuid4().hex}.{extension}",
        width=width,
        height=height,
        content_type=content_type,
        size=uploaded.size,
    )
    row.full_clean()
    uploaded.seek(0)
    get_object_store().save_stream(row.key, uploaded)
    # Stored before the row: a failed save leaves no row; a failed commit leaves an object no row names.
    row.save()
    return row


def job_image_params(*, workspace_id: int, model: BaseModel, params: dict) -> dict:
    """What a job's params keep of its input image — {"image": id, "image_key": key, "image_fit": fit}, or {} —
    after checking the image against the model. Another workspace's upload is a 404, like a missing one."""
    image_id, fit = params.get("image"), params.get("image_fit")
    if image_id is None:
        if model.image_input == "required":
            raise InvalidInput(
                f"{model.display_name} makes a video from an image: upload one and pass its id as params.image.",
                errors={"params.image": ["Required for this model."]},
            )
        if fit is not None:
            raise InvalidInput("image_fit needs an image.", errors={"params.image_fit": ["Set without params.image."]})
        return {}
    if not model.image_input:
        raise InvalidInput(
            f"{model.display_name} does not take an input image.",
            errors={"params.image": [f"{model.display_name} generates from text only."]},
        )
    if fit is not None and fit not in IMAGE_FITS:
        raise InvalidInput(
            f"image_fit must be one of {', '.join(IMAGE_FITS)}.", errors={"params.image_fit": ["Unknown fit."]}
        )
    row = GenerationInput.objects.filter(id=image_id, workspace_id=workspace_id).first()
    if row is None:
        raise NotFound(f"No input image {image_id} in this workspace.")
    return {"image": row.id, "image_key": row.key, "image_fit": fit or DEFAULT_IMAGE_FIT}


def image_fit_to(image: Image.Image, *, width: int, height: int, fit: str) -> Image.Image:
    """The image in RGB at exactly width×height, as `fit` says (IMAGE_FITS)."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    size = (width, height)
    if fit == "fill":
        return image.resize(size, Image.Resampling.LANCZOS)
    if fit == "center-crop":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    if fit == "fit":
        return ImageOps.pad(image, size, Image.Resampling.LANCZOS, color=(0, 0, 0))
    raise ValueError(f"image_fit must be one of {IMAGE_FITS}, not {fit!r}")


def job_input_url(*, job: GenerationJob) -> str:
    """A signed URL (inline, LORASITE_SIGNED_URL_SECONDS) of the job's input image; "" for a job without one."""
    key = job.params.get("image_key", "")
    if not key:
        return ""
    return get_object_store().download_url(
        key, filename=key.rsplit("/", 1)[-1], expires_in=settings.LORASITE_SIGNED_URL_SECONDS, inline=True
    )
