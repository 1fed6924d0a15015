"""The `lora_ingest` task's work, the same for every path: hash, deduplicate, compute the coverage with
diffusers' own key converters (torch: worker only), then mark the LoRA ready or failed with the reason."""

from django.db import transaction
from django.utils import timezone

from loras import recommended
from loras.hashes import FileHashes, hashes_of_stream
from loras.lora_inspect import detect_family, family_label
from loras.models import LoRA, Status
from loras.safetensors_header import read_header
from loras.services.rows import duplicate_conflict, existing_duplicate
from lorasite.object_store import get_object_store


def lora_finish_ingest(*, lora_id: int) -> LoRA:
    """The ingest task's work for every path: hash (when the upload request did not), deduplicate, compute the coverage,
    and mark the LoRA ready, or failed with the reason (its stored copy deleted)."""
    lora = LoRA.objects.get(id=lora_id)
    if lora.status != Status.PROCESSING:
        return lora
    store = get_object_store()
    hashes = known_hashes(lora) or stored_hashes(store, lora.file.name)
    coverage, refusal = coverage_or_refusal(store, lora)
    with transaction.atomic():
        lora = LoRA.objects.select_for_update().get(id=lora_id)
        if lora.status != Status.PROCESSING:
            return lora
        existing = existing_duplicate(lora.workspace_id, hashes.sha256)
        duplicate = existing is not None and existing.id != lora.id
        if duplicate:
            refusal = duplicate_conflict(existing).message
        if refusal:
            # Nothing useless is kept: the copy goes, the row stays as the explanation. A duplicate's row is hidden
            # at once (no failed card, its version free again); its card and API answer still name the original.
            key = lora.file.name
            lora.status, lora.file, lora.error = Status.FAILED, "", refusal
            lora.deleted_at = timezone.now() if duplicate else None
            _set_hashes(lora, hashes)
            lora.save(update_fields=["status", "file", "error", "deleted_at", "updated_at", *hashes.as_fields()])
            transaction.on_commit(lambda: store.delete(key))
            return lora
        lora.status, lora.error = Status.READY, ""
        _set_hashes(lora, hashes)
        update_fields = ["status", "error", "updated_at", *hashes.as_fields()]
        if coverage is not None:
            lora.coverage, lora.module_shapes = coverage, coverage.pop("module_shapes")
            lora.base_model = _family_from_converted(lora.module_shapes) or lora.base_model
            update_fields += ["coverage", "module_shapes", "base_model"]
        update_fields += recommended.apply_proposal(lora)  # after the family is final: it decides guidance_2
        lora.save(update_fields=update_fields)
        transaction.on_commit(lambda: _auto_preview(lora_id))
    return lora


def _auto_preview(lora_id: int) -> None:
    # Imported here: loras.previews uses loras.services, whose package imports this module.
    from loras.previews import auto_preview_after_ingest

    auto_preview_after_ingest(lora_id=lora_id)


def lora_fail_ingest(*, lora_id: int, reason: str) -> None:
    """The ingest task failed unexpectedly: the row becomes `failed` with the reason (only from `processing`) and
    its stored copy is deleted, as for a refused file."""
    with transaction.atomic():
        lora = LoRA.objects.select_for_update().filter(id=lora_id, status=Status.PROCESSING).first()
        if lora is None:
            return
        key = lora.file.name
        lora.status, lora.file, lora.error = Status.FAILED, "", reason[:2000]
        lora.save(update_fields=["status", "file", "error", "updated_at"])
        if key:
            transaction.on_commit(lambda: get_object_store().delete(key))


def known_hashes(lora: LoRA) -> FileHashes | None:
    """The hashes the upload request computed while storing the file (through the app, server import); None when
    any is missing (a multipart upload, or a row from before a hash was added)."""
    hashes = FileHashes(sha256=lora.sha256, autov2=lora.autov2, autov3=lora.autov3, blake3=lora.blake3)
    return hashes if all(hashes.as_fields().values()) else None


def stored_hashes(store, key: str) -> FileHashes:
    """Every hash of a stored object, in one read of it."""
    with store.open_stream(key) as stream:
        return hashes_of_stream(stream)


def _set_hashes(lora: LoRA, hashes: FileHashes) -> None:
    for field, value in hashes.as_fields().items():
        setattr(lora, field, value)


def coverage_or_refusal(store, lora: LoRA) -> tuple[dict | None, str]:
    """(coverage, "") or (None, why diffusers would load nothing of it); (None, "") for families without a loader."""
    # Worker-only: torch and diffusers are imported here, never by the web process.
    from generation.model_registry import model_registry
    from generation.runtime.lora_keys import ARCHITECTURES, CoverageError, lora_coverage, model_layers

    key = lora.file.name
    header = read_header(lambda offset, length: store.read_range(key, offset, length), file_size=lora.file_size)
    tensors = {t.name: (t.dtype, t.shape) for t in header.tensors.values()}
    if lora.base_model == "unknown":
        # No family to refuse for; what a loader makes of it still lets the fit check see its layers.
        for architecture in ARCHITECTURES:
            try:
                coverage = lora_coverage(tensors, family=architecture)
            except CoverageError:
                continue
            if coverage and coverage["mapped"]:
                return coverage, ""
        return None, ""
    family = family_label(lora.base_model)
    models = [
        model
        for model in model_registry().values()
        if model.enabled and lora.base_model in model.families and (model.path / "transformer/config.json").is_file()
    ]
    # The layers of the family's models whose weights this worker has; without any, only the conversion is checked.
    layers = {"transformer": set().union(*(model_layers(m.path / "transformer") for m in models))} if models else None
    try:
        coverage = lora_coverage(tensors, family=lora.base_model, layers=layers)
    except CoverageError as error:
        return None, f"This LoRA cannot be loaded into a {family} pipeline: {error}."
    if coverage is not None and not coverage["mapped"]:
        target = " or ".join(m.display_name for m in models) if models else f"a {family} pipeline"
        ignored = ", ".join(sorted(coverage["ignored"])) or "none"
        return None, (
            f"None of its {coverage['tensors']} tensors map to a layer of {target} (diffusers ignores them: {ignored})."
        )
    return coverage, ""


def _family_from_converted(module_shapes: dict[str, dict[str, list[int]]]) -> str | None:
    """The family read again from diffusers' converted denoiser names; None when they do not tell."""
    denoiser = {**module_shapes.get("transformer", {}), **module_shapes.get("unet", {})}
    family, _ = detect_family({module: tuple(shape) for module, shape in denoiser.items()})
    return None if family == "unknown" else family


def lora_rehash(*, lora_id: int) -> tuple[LoRA, str]:
    """Fill in the hashes of a stored LoRA from one read of its object (rows from before a hash was added).
    Returns (the LoRA, "") or (the LoRA unchanged, why): a stored sha256 the object no longer has is reported,
    never overwritten — the row's identity and the worker cache's check rest on it."""
    lora = LoRA.objects.get(id=lora_id)
    hashes = stored_hashes(get_object_store(), lora.file.name)
    with transaction.atomic():
        lora = LoRA.objects.select_for_update().get(id=lora_id)
        if lora.sha256 and lora.sha256 != hashes.sha256:
            stored, recorded = hashes.sha256[:12], lora.sha256[:12]
            return lora, f"the stored object's sha256 differs from the row's ({stored}… ≠ {recorded}…)"
        _set_hashes(lora, hashes)
        lora.full_clean(validate_constraints=False)
        lora.save(update_fields=[*hashes.as_fields(), "updated_at"])
    return lora, ""
