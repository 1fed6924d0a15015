"""Previews: the image or short video a LoRA's card leads with, and the thumbnails grids load.

A preview is one of: an uploaded image (PNG/JPEG/WebP ≤ 10 MiB, decoded with Pillow) or video (MP4/WebM ≤ 20 MiB),
or a copy of a succeeded job's output that used the LoRA ("Use as preview", or the auto preview job). Its objects
live under `workspaces/<id>/previews/<lora id>/<uuid>/` — never under `loras/`, whose unreferenced objects the
storage cleanup deletes — and are copies, so deleting the job later leaves the preview intact. Replacing or
removing a preview deletes the old objects once the row no longer names them.

With no preview a card shows the thumbnail of the last succeeded job that used the LoRA (one subquery for the
whole grid: `loras.selectors.with_preview_fallback`), then a neutral placeholder. Grids only ever get thumbnail
URLs (WebP ≤ 320 px, made once: by the GPU worker beside each output, here for uploads); the full-size object is
signed only for the detail page and, for a video, fetched by the browser only when the card is hovered
(`preload="none"`).

Auto preview: when a LoRA becomes ready and its workspace has `auto_preview` on, a low-cost job (the cheapest
compatible model a live worker serves; its smallest resolution, fewest frames and steps, unless the LoRA carries
recommended settings) is queued behind users' jobs; when it succeeds its output becomes the preview, unless one
was set meanwhile. Skipped, with a log line saying why, when nothing can run it.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from io import BytesIO
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from generation import services as generation_services
from generation import worker_registry
from generation.model_registry import BaseModel, lora_fit_problem, model_registry
from generation.models import GenerationJob, JobPurpose, JobStatus
from generation.thumbnails import THUMB_NAME, thumbnail_bytes
from loras.models import LoRA, PreviewKind, Status
from loras.selectors import human_size, lora_can_edit
from loras.services.validation import require_editor
from lorasite.errors import ApplicationError, Conflict, InvalidInput, NotFound, PayloadTooLarge
from lorasite.object_store import get_object_store
from workspaces.models import Membership, Role

logger = logging.getLogger(__name__)

PREVIEW_IMAGE_MAX_BYTES = 10 * 1024 * 1024
PREVIEW_VIDEO_MAX_BYTES = 20 * 1024 * 1024
# Pillow's own bomb guard warns at ~89 MP; a card preview never needs more than this.
PREVIEW_MAX_PIXELS = 40_000_000
# Pillow's format name → the stored file's extension; anything else Pillow decodes is refused.
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
VIDEO_EXTENSIONS = {"mp4", "webm"}
ACCEPTED_TEXT = "a PNG, JPEG or WebP image or an MP4 or WebM video"


# --- reads -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewView:
    """What a card or the detail page shows. `kind` "" is the placeholder; `source` is "upload", "job" or
    "fallback" (the last job's output, not chosen by anyone)."""

    kind: str = ""
    source: str = ""
    thumb_url: str = ""
    full_url: str = ""  # the image or video itself: the detail page, and a card's video on hover
    job_id: uuid.UUID | None = None


def _signed(key: str) -> str:
    if not key:
        return ""
    return get_object_store().download_url(
        key, filename=key.rsplit("/", 1)[-1], expires_in=settings.LORASITE_SIGNED_URL_SECONDS, inline=True
    )


def lora_card_preview(*, lora: LoRA) -> PreviewView:
    """The card's preview: thumbnail URLs only, plus the video a hover plays; for rows from `with_preview_fallback`
    (no query: signing is local)."""
    if lora.preview_key:
        return PreviewView(
            kind=lora.preview_kind,
            source="job" if lora.preview_job_id else "upload",
            thumb_url=_signed(lora.preview_thumb_key),
            full_url=_signed(lora.preview_key) if lora.preview_kind == PreviewKind.VIDEO else "",
            job_id=lora.preview_job_id,
        )
    fallback = getattr(lora, "fallback_thumb_key", "")
    if fallback:
        return PreviewView(kind=PreviewKind.IMAGE, source="fallback", thumb_url=_signed(fallback))
    return PreviewView()


def lora_detail_preview(*, lora: LoRA) -> PreviewView:
    """The detail page's preview, full size (the fallback stays a thumbnail: it is only a stand-in)."""
    card = lora_card_preview(lora=lora)
    if lora.preview_key:
        return replace(card, full_url=_signed(lora.preview_key))
    return card


def lora_preview_get(*, lora: LoRA) -> dict:
    """The API's view of a LoRA's preview: explicit only (the fallback is a card's choice, not the LoRA's)."""
    if not lora.preview_key:
        return {"kind": None, "source": None, "url": None, "thumb_url": None, "job_id": None, "expires_at": None}
    view = lora_detail_preview(lora=lora)
    return {
        "kind": view.kind,
        "source": view.source,
        "url": view.full_url,
        "thumb_url": view.thumb_url or None,
        "job_id": view.job_id,
        "expires_at": timezone.now() + timedelta(seconds=settings.LORASITE_SIGNED_URL_SECONDS),
    }


def preview_targets(*, actor: Membership, job: GenerationJob) -> list[LoRA]:
    """The LoRAs a succeeded job used that the caller may give this job's output as preview (the job page's
    "Use as preview" buttons): alive, in the job's workspace, editable by the caller."""
    if job.status != JobStatus.SUCCEEDED or not job.output_key or job.workspace_id != actor.workspace_id:
        return []
    loras = LoRA.objects.alive().filter(workspace_id=job.workspace_id, job_uses__job=job).order_by("job_uses__position")
    return [lora for lora in loras if lora_can_edit(actor=actor, lora=lora)]


# --- uploads -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    kind: str
    extension: str
    thumb: bytes | None  # None: a video without a poster (no decoder on this process)


def _sniff(head: bytes) -> str:
    """ "image", "mp4", "webm" or "" from the first bytes (the name and the declared type are not trusted)."""
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    return ""


def _prepare_image(uploaded: UploadedFile) -> _Prepared:
    if uploaded.size > PREVIEW_IMAGE_MAX_BYTES:
        raise PayloadTooLarge(
            f"Preview images are limited to {human_size(PREVIEW_IMAGE_MAX_BYTES)}; this one is "
            f"{human_size(uploaded.size)}.",
            errors={"file": ["Too large."]},
            limit_bytes=PREVIEW_IMAGE_MAX_BYTES,
        )
    problem = "The file could not be decoded as an image; it may be truncated or corrupt."
    try:
        uploaded.seek(0)
        with Image.open(uploaded) as image:
            image_format = image.format
            if image_format not in IMAGE_FORMATS:
                problem = f"{image_format} images are not accepted; send {ACCEPTED_TEXT}."
                raise ValueError(problem)
            if image.width * image.height > PREVIEW_MAX_PIXELS:
                problem = f"The image is {image.width}×{image.height}; previews are limited to 40 megapixels."
                raise ValueError(problem)
            image.load()  # decode every pixel: a header that parses is not yet an image
            thumb = thumbnail_bytes(image)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise InvalidInput(problem, errors={"file": [problem]}) from error
    return _Prepared(kind=PreviewKind.IMAGE, extension=IMAGE_FORMATS[image_format], thumb=thumb)


def _video_poster(path: Path) -> bytes | None:
    """The first frame's thumbnail; None when this process has no video decoder (the slim web image). Raises
    ValueError when ffmpeg cannot decode the file."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    frames = imageio_ffmpeg.read_frames(str(path), output_params=["-frames:v", "1"])
    try:
        meta = next(frames)
        width, height = meta["size"]
        first = next(frames, None)
    except (RuntimeError, OSError, StopIteration, KeyError) as error:
        raise ValueError(str(error)) from error
    finally:
        frames.close()
    if not first:
        raise ValueError("no video frame")
    return thumbnail_bytes(Image.frombytes("RGB", (width, height), first))


def _prepare_video(uploaded: UploadedFile, extension: str, scratch: Path) -> _Prepared:
    if uploaded.size > PREVIEW_VIDEO_MAX_BYTES:
        raise PayloadTooLarge(
            f"Preview videos are limited to {human_size(PREVIEW_VIDEO_MAX_BYTES)}; this one is "
            f"{human_size(uploaded.size)}.",
            errors={"file": ["Too large."]},
            limit_bytes=PREVIEW_VIDEO_MAX_BYTES,
        )
    path = scratch / f"preview.{extension}"
    uploaded.seek(0)
    with open(path, "wb") as out:
        for chunk in uploaded.chunks():
            out.write(chunk)
    try:
        thumb = _video_poster(path)
    except ValueError as error:
        problem = f"The file could not be decoded as an {extension.upper()} video; it may be truncated or corrupt."
        raise InvalidInput(problem, errors={"file": [problem]}) from error
    return _Prepared(kind=PreviewKind.VIDEO, extension=extension, thumb=thumb)


def _prepare(uploaded: UploadedFile, scratch: Path) -> _Prepared:
    if not uploaded.size:
        raise InvalidInput("The file is empty.", errors={"file": ["The file is empty."]})
    uploaded.seek(0)
    kind = _sniff(uploaded.read(16))
    if kind == "image":
        return _prepare_image(uploaded)
    if kind in VIDEO_EXTENSIONS:
        return _prepare_video(uploaded, kind, scratch)
    problem = f"This is not {ACCEPTED_TEXT}."
    raise InvalidInput(problem, errors={"file": [problem]})


def _preview_folder(lora: LoRA) -> str:
    return f"workspaces/{lora.workspace_id}/previews/{lora.id}/{uuid.uuid4().hex}/"


def _set_preview(*, lora_id: int, kind: str, key: str, thumb_key: str, job: GenerationJob | None) -> LoRA:
    """Point the row at the new objects and delete the old ones once that is committed; the new ones go if the
    row cannot be written."""
    try:
        with transaction.atomic():
            lora = LoRA.objects.select_for_update().get(id=lora_id)
            old_keys = [k for k in (lora.preview_key, lora.preview_thumb_key) if k]
            lora.preview_key, lora.preview_thumb_key, lora.preview_kind, lora.preview_job = key, thumb_key, kind, job
            lora.full_clean(validate_constraints=False)
            lora.save(update_fields=["preview_key", "preview_thumb_key", "preview_kind", "preview_job", "updated_at"])
            transaction.on_commit(lambda: _delete_keys(old_keys))
    except BaseException:
        _delete_keys([k for k in (key, thumb_key) if k])
        raise
    return lora


def _delete_keys(keys: list[str]) -> None:
    store = get_object_store()
    for key in keys:
        store.delete(key)


def lora_preview_upload(*, actor: Membership, lora: LoRA, uploaded_file: UploadedFile) -> LoRA:
    """An uploaded image or video becomes the LoRA's preview (its thumbnail made now). A file that is not one
    (checked from its bytes, then decoded) is refused naming the problem, with nothing stored."""
    require_editor(actor, lora)
    folder = _preview_folder(lora)
    store = get_object_store()
    with tempfile.TemporaryDirectory(prefix="lorasite-preview-") as scratch:
        prepared = _prepare(uploaded_file, Path(scratch))
        key = f"{folder}preview.{prepared.extension}"
        thumb_key = f"{folder}{THUMB_NAME}" if prepared.thumb is not None else ""
        try:
            uploaded_file.seek(0)
            store.save_stream(key, uploaded_file)
            if prepared.thumb is not None:
                store.save_stream(thumb_key, BytesIO(prepared.thumb))
        except BaseException:
            _delete_keys([k for k in (key, thumb_key) if k])
            raise
    return _set_preview(lora_id=lora.id, kind=prepared.kind, key=key, thumb_key=thumb_key, job=None)


# --- from a job --------------------------------------------------------------------------------------


def _copy_job_output(lora: LoRA, job: GenerationJob) -> tuple[str, str, str]:
    """Copies of the job's output and thumbnail in the LoRA's preview folder: (kind, key, thumb key). A job from
    before thumbnails gets one made now from its poster or image."""
    store = get_object_store()
    folder = _preview_folder(lora)
    extension = job.output_key.rsplit(".", 1)[-1].lower()
    key, thumb_key = f"{folder}preview.{extension}", f"{folder}{THUMB_NAME}"
    try:
        store.copy(job.output_key, key)
        if job.thumb_key:
            store.copy(job.thumb_key, thumb_key)
        else:
            with (
                store.open_stream(job.poster_key or job.output_key) as stream,
                Image.open(BytesIO(stream.read())) as im,
            ):
                store.save_stream(thumb_key, BytesIO(thumbnail_bytes(im)))
    except BaseException:
        _delete_keys([key, thumb_key])
        raise
    return (PreviewKind.VIDEO if job.kind == "video" else PreviewKind.IMAGE), key, thumb_key


def lora_preview_from_job(*, actor: Membership, lora: LoRA, job_id: uuid.UUID) -> LoRA:
    """ "Use as preview": a succeeded job of the LoRA's workspace that used it gives its output (copied)."""
    require_editor(actor, lora)
    job = GenerationJob.objects.filter(id=job_id, workspace_id=lora.workspace_id).first()
    if job is None:
        raise NotFound("Job not found.")
    if not job.job_loras.filter(lora_ref=lora.id).exists():
        message = f"This job did not use '{lora.name}'; only an output made with a LoRA can be its preview."
        raise InvalidInput(message, errors={"job_id": [message]})
    if job.status != JobStatus.SUCCEEDED or not job.output_key:
        raise Conflict(f"The job is {job.status}; only a succeeded job's output can be a preview.")
    kind, key, thumb_key = _copy_job_output(lora, job)
    return _set_preview(lora_id=lora.id, kind=kind, key=key, thumb_key=thumb_key, job=job)


@transaction.atomic
def lora_preview_delete(*, actor: Membership, lora: LoRA) -> LoRA:
    """Remove the preview (the card falls back to the last job's thumbnail); its objects are deleted."""
    require_editor(actor, lora)
    lora = LoRA.objects.select_for_update().get(id=lora.id)
    old_keys = [k for k in (lora.preview_key, lora.preview_thumb_key) if k]
    lora.preview_key, lora.preview_thumb_key, lora.preview_kind, lora.preview_job = "", "", "", None
    lora.save(update_fields=["preview_key", "preview_thumb_key", "preview_kind", "preview_job", "updated_at"])
    transaction.on_commit(lambda: _delete_keys(old_keys))
    return lora


# --- auto preview ------------------------------------------------------------------------------------


def lora_preview_from_preview_job(*, job: GenerationJob) -> None:
    """`job_succeed` of an auto preview job (inside its transaction): once committed, the output becomes the
    preview of the job's LoRA unless the LoRA has one by then."""
    lora_ids = list(job.job_loras.values_list("lora_ref", flat=True))
    if len(lora_ids) == 1:
        transaction.on_commit(lambda: _adopt_preview_job(job_id=job.id, lora_id=lora_ids[0]))


def _adopt_preview_job(*, job_id: uuid.UUID, lora_id: int) -> None:
    try:
        _adopt(job_id=job_id, lora_id=lora_id)
    except Exception:  # the job has succeeded whatever happens here; the card keeps its fallback
        logger.exception("Auto preview: job %s could not become the preview of LoRA %s", job_id, lora_id)


def _adopt(*, job_id: uuid.UUID, lora_id: int) -> None:
    lora = LoRA.objects.alive().filter(id=lora_id).first()
    job = GenerationJob.objects.get(id=job_id)
    if lora is None or lora.preview_key:
        return
    kind, key, thumb_key = _copy_job_output(lora, job)
    with transaction.atomic():
        current = LoRA.objects.select_for_update().get(id=lora_id)
        if current.preview_key:  # the user set one while the copies were made: theirs wins
            transaction.on_commit(lambda: _delete_keys([key, thumb_key]))
            return
        _set_preview(lora_id=lora_id, kind=kind, key=key, thumb_key=thumb_key, job=job)
    logger.info("Auto preview: job %s is now the preview of LoRA %s", job_id, lora_id)


def _preview_actor(lora: LoRA) -> Membership | None:
    """Whom the preview job runs as: the uploader while they may run jobs, else an owner of the workspace."""
    memberships = Membership.objects.filter(workspace_id=lora.workspace_id).select_related("workspace")
    uploader = memberships.filter(user_id=lora.created_by_id).first() if lora.created_by_id else None
    if uploader is not None and uploader.has_role(Role.MEMBER):
        return uploader
    return memberships.filter(role=Role.OWNER).order_by("id").first()


def _cheapest(models: list[BaseModel]) -> BaseModel:
    """The model whose cheapest job makes the fewest pixels × steps; on a tie the one with fewer experts to load."""

    def cost(model: BaseModel) -> tuple[int, int]:
        caps = model.capabilities
        width, height = min(caps.resolutions, key=lambda size: size[0] * size[1])
        pixels = width * height * (min(caps.frame_counts) if caps.frame_counts else 1)
        return pixels * caps.steps[0], len(model.experts)

    return min(models, key=cost)


def preview_job_input(*, lora: LoRA, model: BaseModel) -> dict:
    """The cheapest job `model` allows (smallest resolution, fewest frames and steps), with the LoRA's recommended
    settings where it has them; the prompt is its trigger words, or its name."""
    caps = model.capabilities
    width, height = min(caps.resolutions, key=lambda size: size[0] * size[1])
    params = {"width": width, "height": height, "steps": caps.steps[0], "seed": 0}
    if model.kind == "video":
        params.update(num_frames=min(caps.frame_counts), fps=caps.default_fps)
    recommended = lora.recommended_settings or {}
    if recommended.get("steps") is not None:
        params["steps"] = min(max(int(recommended["steps"]), caps.steps[0]), caps.steps[1])
    for name in ("guidance", "guidance_2") if model.two_experts else ("guidance",):
        if recommended.get(name) is not None:
            params[name] = min(max(float(recommended[name]), caps.guidance_range[0]), caps.guidance_range[1])
    prompt = ", ".join(lora.trigger_words) or lora.name
    return {"model": model.key, "prompt": prompt, "params": params}


def auto_preview_after_ingest(*, lora_id: int) -> None:
    """The ingest task's hook once a LoRA is ready: queue its auto preview, never failing the ingest."""
    try:
        auto_preview_queue(lora_id=lora_id)
    except Exception:  # a preview is a nicety; the LoRA is ready whatever happens here
        logger.exception("Auto preview of LoRA %s failed", lora_id)


def auto_preview_queue(*, lora_id: int) -> GenerationJob | None:
    """Queue the auto preview job of a LoRA that just became ready; None (logged) when it is skipped."""
    lora = LoRA.objects.alive().select_related("workspace").filter(id=lora_id, status=Status.READY).first()
    if lora is None or not lora.is_active or not lora.workspace.auto_preview or lora.preview_key:
        return None
    if GenerationJob.objects.filter(purpose=JobPurpose.PREVIEW, job_loras__lora_ref=lora.id).exists():
        return None
    served = worker_registry.models_served()
    if served is None:
        logger.info("Auto preview of LoRA %s skipped: the worker registry cannot be read", lora.id)
        return None
    models = [
        model
        for model in model_registry().values()
        if model.enabled
        and model.weights_present
        and model.key in served
        and model.image_input != "required"  # a preview job has no input image
        and lora.base_model in model.families
        and lora_fit_problem(lora.module_shapes, model) is None
    ]
    if not models:
        logger.info("Auto preview of LoRA %s skipped: no live worker serves a model it fits", lora.id)
        return None
    actor = _preview_actor(lora)
    if actor is None:
        logger.info("Auto preview of LoRA %s skipped: no member of its workspace can run jobs", lora.id)
        return None
    job_input = preview_job_input(lora=lora, model=_cheapest(models))
    try:
        job = generation_services.generation_create(
            actor=actor,
            loras=[generation_services.LoRARequest(lora_id=lora.id)],
            purpose=JobPurpose.PREVIEW,
            **job_input,
        )
    except ApplicationError as error:
        job_id = error.extra.get("job_id")
        if job_id:  # saved, the queue is down: beat sends it once the queue is back
            logger.warning("Auto preview job %s of LoRA %s waits for the job queue", job_id, lora.id)
            return GenerationJob.objects.get(id=job_id)
        logger.info("Auto preview of LoRA %s skipped: %s", lora.id, error.message)
        return None
    logger.info("Auto preview of LoRA %s queued as job %s on %s", lora.id, job.id, job.model_key)
    return job
