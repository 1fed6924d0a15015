"""What a GPU worker process does with one job: fetch its LoRAs through the local cache, apply
them to the right experts of the long-lived pipeline, generate, store the output, and always
return the pipeline to its base state. Imported only inside the Celery task, so the web process
never imports torch."""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from io import BytesIO
from pathlib import Path

import torch
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from PIL import Image

from generation import services
from generation.inputs import image_fit_to
from generation.model_registry import BaseModel, model_get
from generation.models import GenerationJob
from generation.provenance import job_provenance
from generation.runtime.adapters import AdapterManager, AdapterSpec, LoRAChecksumError, LoRALoadError
from generation.runtime.encode import poster_from_frames, write_mp4, write_png
from generation.runtime.generate import GenerationCancelled, run_pipeline
from generation.runtime.lora_cache import LoRACache, LoRAIntegrityError, cached_sha256
from generation.runtime.memory_plan import PlacementError, Plan, plan
from generation.runtime.pipelines import PipelineRegistry, device_memory_bytes, runtime_device
from generation.thumbnails import THUMB_NAME, write_thumbnail
from generation.worker_registry import DISK_LIST_LIMIT
from lorasite.metrics import PhaseHistograms
from lorasite.object_store import get_object_store

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.5

_ADAPTER_MANAGERS: dict[str, AdapterManager] = {}
# An evicted or dropped pipeline takes its adapter manager (the record of its LoRAs) with it.
PIPELINES = PipelineRegistry(on_evict=lambda model_key: _ADAPTER_MANAGERS.pop(model_key, None))
# What the heartbeat reports besides the pipelines and adapters: the job running, and per LoRA applied where it
# came from ("adapter_file", "adapter_host_tier", "adapter_resident") plus "jobs", since the process started.
_CURRENT_JOB = {"id": ""}
# Called when the router should see this worker's new state now rather than at the next heartbeat (jobs may be
# shorter than the heartbeat): a job claimed (it counts in the backlog) and its adapters applied (they are resident).
# generation/worker_startup.py announces the worker there.
ANNOUNCE_HOOKS: list[Callable[[], None]] = []


def _announce() -> None:
    for hook in ANNOUNCE_HOOKS:
        hook()


_COUNTERS: Counter[str] = Counter()
_PHASES = PhaseHistograms()


def model_plan(model: BaseModel) -> Plan:
    """Where `model` runs on this worker's device; raises PlacementError (GiB needed and available) if nowhere."""
    return plan(model, device_memory_bytes(settings.LORASITE_GPU_MEMORY_BYTES))


@functools.cache
def lora_cache() -> LoRACache:
    store = get_object_store()
    return LoRACache(
        settings.LORASITE_WORKER_CACHE_DIR,
        max_bytes=settings.LORASITE_WORKER_CACHE_BYTES,
        fetch=lambda object_key, destination: store.download_to(object_key, destination),
    )


def adapter_manager(model: BaseModel, pipe) -> AdapterManager:
    # One manager per pipeline for the life of the process: it is the record of what is loaded.
    manager = _ADAPTER_MANAGERS.get(model.key)
    if manager is None:
        manager = AdapterManager(
            pipe,
            residency=settings.LORASITE_LORA_RESIDENCY,
            max_resident=settings.LORASITE_RESIDENT_ADAPTERS,
            max_resident_bytes=settings.LORASITE_RESIDENT_ADAPTER_BYTES,
            apply_mode=settings.LORASITE_LORA_APPLY,
            host_tier_bytes=settings.LORASITE_HOST_TIER_BYTES,
            fused_backup_bytes=settings.LORASITE_FUSED_BACKUP_BYTES,
        )
        _ADAPTER_MANAGERS[model.key] = manager
    return manager


@contextmanager
def phase(timings: dict, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - started, 3)


class _Progress:
    """Writes progress to the job row at most every PROGRESS_INTERVAL_SECONDS; the pipeline asks
    between every two steps whether a cancel was requested (one indexed read)."""

    def __init__(self, job_id: str) -> None:
        self.job_id, self.last_write = job_id, 0.0

    def on_step(self, step: int, total: int) -> None:
        now = time.monotonic()
        if step == total or now - self.last_write >= PROGRESS_INTERVAL_SECONDS:
            services.job_progress(job_id=self.job_id, step=step, total=total)
            self.last_write = now

    def should_cancel(self) -> bool:
        return services.job_cancel_requested(job_id=self.job_id)


def _adapter_specs(job: GenerationJob, timings: dict) -> list[AdapterSpec]:
    job_loras = list(job.job_loras.all())
    cache = lora_cache()
    pinned = {jl.sha256 for jl in job_loras}
    specs = []
    with phase(timings, "download"):
        for jl in job_loras:
            try:
                path = cache.path_for(sha256=jl.sha256, object_key=jl.file_key, size=jl.file_size, pinned=pinned)
            except (LoRAIntegrityError, FileNotFoundError) as error:
                raise LoRALoadError(
                    f"LoRA '{jl.name}' (lora_{jl.lora_ref}) could not be fetched intact: {error}"
                ) from error
            specs.append(
                AdapterSpec(
                    lora_id=jl.lora_ref,
                    display_name=jl.name,
                    weight=jl.weight,
                    weight_low=jl.weight_low,
                    expert=jl.expert,
                    path=path,
                    sha256=jl.sha256,
                )
            )
    return specs


def _apply_adapters(job: GenerationJob, manager: AdapterManager, specs: list[AdapterSpec], timings: dict) -> None:
    """Apply the job's LoRAs; a cached file whose bytes fail their hash when read (bit rot that kept its size and
    mtime) is dropped from the cache and fetched once more; failing again fails the job (the error names it)."""
    try:
        with phase(timings, "adapter_load"):
            manager.apply(specs)
    except LoRAChecksumError as error:
        logger.warning("Job %s: %s; fetching it again", job.id, error)
        lora_cache().invalidate(error.spec.sha256)
        specs = _adapter_specs(job, timings)
        with phase(timings, "adapter_load"):
            manager.apply(specs)


def _generate_and_store(
    job: GenerationJob, model: BaseModel, pipe, progress: _Progress, timings: dict
) -> tuple[str, str, str, int]:
    """Run the pipeline and store the output, its poster and thumbnail: their keys, and the bytes of the output and
    poster (what counts toward the workspace's quota)."""
    params = job.params
    with phase(timings, "inference"):
        output = run_pipeline(
            pipe,
            kind=model.kind,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            width=params["width"],
            height=params["height"],
            num_frames=params.get("num_frames", 1),
            steps=params["steps"],
            guidance=params["guidance"],
            guidance_2=params.get("guidance_2"),
            seed=params["seed"],
            on_step=progress.on_step,
            should_cancel=progress.should_cancel,
            image=_input_image(params),
        )
    prefix = services.job_output_prefix(job)
    provenance = job_provenance(job)  # the same dict the job API and page show
    store = get_object_store()
    with tempfile.TemporaryDirectory(prefix="lorasite-output-") as scratch:
        folder = Path(scratch)
        with phase(timings, "encode"):
            if model.kind == "video":
                write_mp4(output, folder / "output.mp4", fps=params["fps"], provenance=provenance)
                poster_from_frames(output).save(folder / "poster.png")
                names = ("output.mp4", "poster.png")
            else:
                write_png(output, folder / "output.png", provenance=provenance)
                names = ("output.png", "")
            # Made once here, from the poster or the image, so that grids never load a full-size output.
            write_thumbnail(folder / (names[1] or names[0]), folder / THUMB_NAME)
        with phase(timings, "upload"):
            for name in (*filter(None, names), THUMB_NAME):
                store.save_file(prefix + name, folder / name)
        size = sum((folder / name).stat().st_size for name in filter(None, names))
    return prefix + names[0], (prefix + names[1]) if names[1] else "", prefix + THUMB_NAME, size


def _input_image(params: dict) -> Image.Image | None:
    """The job's input image (image-to-video) at its resolution, read from the key its params keep."""
    if not params.get("image_key"):
        return None
    # Read whole (≤ LORASITE_INPUT_IMAGE_MAX_BYTES): Pillow seeks, an S3 body cannot.
    with closing(get_object_store().open_stream(params["image_key"])) as stream:
        data = stream.read()
    with Image.open(BytesIO(data)) as image:
        return image_fit_to(image, width=params["width"], height=params["height"], fit=params["image_fit"])


def _drop_pipeline(model_key: str, *, job_id: str) -> None:
    """A pipeline whose adapters could not be reset is in an unknown state: forget it (and its manager), so the
    next job on this model loads a fresh one."""
    logger.exception("Job %s: resetting the adapters of %s failed; dropping the pipeline", job_id, model_key)
    _ADAPTER_MANAGERS.pop(model_key, None)
    try:
        PIPELINES.drop(model_key)
    except Exception:  # freeing memory failed too; the job must still be marked failed
        logger.exception("Job %s: dropping the pipeline %s failed", job_id, model_key)


def execute_job(job_id: str, *, worker_name: str) -> None:
    job = services.job_claim(job_id=job_id, worker=worker_name)
    if job is None:
        return
    _CURRENT_JOB["id"] = job_id
    _announce()
    try:
        _execute_claimed(job)
    finally:
        _CURRENT_JOB["id"] = ""
        _COUNTERS["jobs"] += 1


def _execute_claimed(job: GenerationJob) -> None:
    job_id = str(job.id)
    timings: dict[str, float] = {}
    manager: AdapterManager | None = None
    outcome: dict = {"error": "", "cancelled": False}
    try:
        model = model_get(job.model_key)
        model_placement = model_plan(model)  # before loading: a model that cannot fit fails here
        with phase(timings, "model_load"):
            pipe = PIPELINES.get(model.key, path=model.path, pipeline_class=model.pipeline_class, plan=model_placement)
        manager = adapter_manager(model, pipe)
        specs = _adapter_specs(job, timings)
        for spec in specs:
            logger.info("Job %s: applying %s", job.id, spec.describe())
        _apply_adapters(job, manager, specs, timings)
        _COUNTERS.update(f"adapter_{source}" for source in manager.last_apply_stats.sources.values())
        _announce()
        outcome["keys"] = _generate_and_store(job, model, pipe, _Progress(str(job.id)), timings)
    except GenerationCancelled:
        outcome["cancelled"] = True
    except SoftTimeLimitExceeded:
        outcome["error"] = f"The job ran past the {settings.CELERY_TASK_SOFT_TIME_LIMIT} s time limit and was stopped."
    except (LoRALoadError, PlacementError) as error:
        outcome["error"] = str(error)
    except Exception as error:  # reported on the job: a failure must never leave it running
        logger.exception("Job %s failed", job.id)
        outcome["error"] = f"{type(error).__name__}: {error}"
    finally:
        # Whatever happened, no adapter stays active for the next job. Only a job that succeeded may leave its
        # LoRAs merged, for an identical next job to reuse (AdapterManager.reset).
        if manager is not None:
            try:
                with phase(timings, "adapter_unload"):
                    manager.reset(keep_merged="keys" in outcome)
            except Exception as error:
                _drop_pipeline(model.key, job_id=str(job.id))
                outcome.pop("keys", None)
                outcome["cancelled"] = False
                reset_error = (
                    f"Resetting the LoRA adapters failed, so the model was unloaded: {type(error).__name__}: {error}"
                )
                outcome["error"] = f"{outcome['error']} {reset_error}" if outcome["error"] else reset_error
    _PHASES.observe({"queue_wait": job.timings.get("queue_wait"), **timings})
    if "keys" in outcome:
        output_key, poster_key, thumb_key, output_bytes = outcome["keys"]
        services.job_succeed(
            job_id=job_id,
            output_key=output_key,
            poster_key=poster_key,
            thumb_key=thumb_key,
            output_bytes=output_bytes,
            timings=timings,
        )
    else:
        services.job_fail(job_id=job_id, error=outcome["error"], timings=timings, cancelled=outcome["cancelled"])


def prefetch_lora(*, sha256: str, file_key: str, size: int, model_keys: list[str]) -> None:
    """Fetch a LoRA into the disk cache before a job needs it (generation/scaleout.py), and convert it into the host
    tier of each loaded pipeline of `model_keys` (the models it fits that this worker serves). A file that cannot be
    fetched or converted is only logged: the job that needs it will say so."""
    try:
        path = lora_cache().path_for(sha256=sha256, object_key=file_key, size=size)
    except (LoRAIntegrityError, FileNotFoundError, ValueError) as error:
        logger.warning("Prefetch of %s failed: %s", sha256, error)
        return
    for model_key in model_keys:
        manager = _ADAPTER_MANAGERS.get(model_key)
        if manager is None:
            continue  # the pipeline is not loaded: there is no host tier to fill
        try:
            kept = manager.warm(path=path, sha256=sha256)
        except Exception:  # a hint only; the job reports a broken file with its name
            logger.warning("Prefetch of %s into the host tier of %s failed", sha256, model_key, exc_info=True)
            continue
        logger.info("Prefetched %s into %s (%s)", sha256, model_key, "host tier" if kept else "disk only")


def worker_status() -> dict:
    """What this worker's heartbeat reports (the fields of worker_registry.LiveWorker). Read from the heartbeat
    thread while a job may run: each collection is copied before it is walked."""
    device = runtime_device()
    free = total = None
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
    adapters = {}
    for model_key, manager in list(_ADAPTER_MANAGERS.items()):
        files = manager.resident_files
        merged = set(manager.merged_adapters)
        adapters[model_key] = {
            "merged": [cached_sha256(path) for name, path in files.items() if name in merged],
            "resident": [cached_sha256(path) for path in files.values()],
            "host_tier": [cached_sha256(path) for path in manager.host_tier.paths],
        }
    cache = lora_cache()
    disk, disk_count, cache_bytes = cache.recent_sha256(DISK_LIST_LIMIT)
    return {
        "device": str(device),
        "free_memory_bytes": free,
        "total_memory_bytes": total,
        "pipelines": PIPELINES.loaded_keys(),
        "adapters": adapters,
        "disk": disk,
        "disk_count": disk_count,
        "cache_bytes": cache_bytes,
        "cache_max_bytes": cache.max_bytes,
        "current_job": _CURRENT_JOB["id"],
        "histograms": _PHASES.as_record(),
        "counters": {
            **_COUNTERS,
            "downloads": cache.stats.misses,
            "bytes_downloaded": cache.stats.bytes_fetched,
        },
    }
