"""The GPU worker's job execution, in-process on the demo pipelines (CPU): outputs in storage,
timings, LoRA usage, and cleanup after success, failure, cancel and the time limit."""

import hashlib
import io

import numpy as np
import pytest
import requests
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from peft.tuners.tuners_utils import BaseTunerLayer
from PIL import Image

from generation import services, worker
from generation.models import GenerationJob, JobStatus
from generation.runtime.adapters import AdapterManager, lora_components
from generation.selectors import job_output_urls
from loras import services as lora_services
from loras.models import LoRA
from lorasite.object_store import get_object_store
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = pytest.mark.django_db

WAN = "wan22-a14b-demo"


@pytest.fixture(autouse=True)
def worker_environment(demo_models, tmp_path):
    with override_settings(LORASITE_WORKER_CACHE_DIR=tmp_path / "cache"):
        worker.lora_cache.cache_clear()
        yield
    worker.lora_cache.cache_clear()


@pytest.fixture
def actor(workspace, member_of):
    return workspace.memberships.get(user=member_of(Role.OWNER))


@pytest.fixture
def make_lora(actor, tmp_path):
    counter = iter(range(1, 1000))

    def make(name: str, **kwargs) -> LoRA:
        seed = next(counter)
        path = write_lora(
            tmp_path / f"{name}-{seed}.safetensors", family="wan-demo", blocks=2, seed=seed, std=0.3, **kwargs
        )
        return ingest_ready(actor=actor, path=path, options=lora_services.LoRAOptions(name=name))

    return make


def run(actor, *, loras=(), model=WAN, **params) -> GenerationJob:
    requests_ = [services.LoRARequest(lora_id=lora.id, weight=w, expert=e) for lora, w, e in loras]
    job = services.generation_create(
        actor=actor, model=model, prompt="a cat", params={"seed": 1, **params}, loras=requests_
    )
    worker.execute_job(str(job.id), worker_name="test@worker")
    job.refresh_from_db()
    return job


def frame_of(job: GenerationJob) -> np.ndarray:
    url = job_output_urls(job=job)["poster_url" if job.kind == "video" else "output_url"]
    return np.asarray(Image.open(io.BytesIO(requests.get(url, timeout=30).content)))


def pipeline_is_clean(model_key: str = WAN, *, after_success: bool = False) -> bool:
    """No adapter active: every LoRA layer of every component is disabled and unmerged. After a job that succeeded
    its LoRAs may stay merged (and nothing else enabled) for an identical next job; any other job restores first."""
    pipe = worker.PIPELINES.get(model_key, path=settings.LORASITE_MODELS_DIR / model_key, pipeline_class="WanPipeline")
    manager = worker._ADAPTER_MANAGERS.get(model_key)
    kept = set(manager.merged_adapters) if manager is not None and after_success else set()
    layers = [m for c in lora_components(pipe).values() for m in c.modules() if isinstance(m, BaseTunerLayer)]
    return (manager is None or manager.active_adapters == []) and all(
        (layer.disable_adapters and not layer.merged) or (layer.merged and set(layer.merged_adapters) <= kept)
        for layer in layers
    )


def test_video_job_stores_mp4_and_poster_with_timings(actor, make_lora, s3_keys):
    lora = make_lora("anime")
    job = run(actor, loras=[(lora, 0.8, "high")])
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.progress == 100 and job.current_step == job.total_steps == 4
    prefix = f"workspaces/{job.workspace_id}/outputs/{job.id}/"
    assert sorted(s3_keys(prefix)) == [prefix + "output.mp4", prefix + "poster.png", prefix + "thumb.webp"]
    assert {
        "queue_wait",
        "model_load",
        "download",
        "adapter_load",
        "inference",
        "encode",
        "upload",
        "adapter_unload",
    } <= set(job.timings)
    video = requests.get(job_output_urls(job=job)["output_url"], timeout=30)
    assert video.headers["Content-Type"] == "video/mp4" and video.content[4:8] == b"ftyp"
    lora.refresh_from_db()
    assert lora.use_count == 1 and lora.last_used_at is not None
    assert pipeline_is_clean(after_success=True)


def test_a_job_is_announced_when_claimed_and_again_with_its_adapters_resident(actor, make_lora, monkeypatch):
    lora = make_lora("anime")
    seen = []

    def record() -> None:
        status = worker.worker_status()
        seen.append((status["current_job"], status["adapters"].get(WAN, {}).get("resident", [])))

    monkeypatch.setattr(worker, "ANNOUNCE_HOOKS", [record])
    job = run(actor, loras=[(lora, 0.8, "high")])
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert [current for current, _ in seen] == [str(job.id)] * 2
    assert lora.sha256 in seen[1][1]
    assert worker.worker_status()["current_job"] == ""


def test_image_job(actor):
    job = run(actor, model="flux-demo")
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.output_key.endswith("/output.png") and job.poster_key == ""
    assert frame_of(job).ndim == 3
    # The worker records what the output weighs, for the storage meter (the thumbnail does not count).
    assert job.output_bytes == get_object_store().size(job.output_key) > 0


def test_lora_changes_output_and_weight_zero_is_base(actor, make_lora):
    lora = make_lora("style")
    base = frame_of(run(actor))
    zero = frame_of(run(actor, loras=[(lora, 0.0, "both")]))
    full = frame_of(run(actor, loras=[(lora, 1.0, "both")]))
    np.testing.assert_array_equal(zero, base)
    assert np.abs(full.astype(int) - base.astype(int)).max() > 0
    assert np.array_equal(frame_of(run(actor)), base)  # and back to base afterwards
    assert pipeline_is_clean()


def test_cache_hit_makes_no_storage_request(actor, make_lora, monkeypatch):
    lora = make_lora("cached")
    run(actor, loras=[(lora, 1.0, "high")])
    fetches = []
    store = get_object_store()
    monkeypatch.setattr(type(store), "download_to", lambda self, key, path: fetches.append(key))
    worker.lora_cache.cache_clear()
    assert run(actor, loras=[(lora, 1.0, "high")]).status == JobStatus.SUCCEEDED
    assert fetches == []


@pytest.mark.parametrize("hash_matches", [False, True], ids=["tampered in storage", "corrupt at load time"])
def test_corrupt_lora_fails_the_job_naming_it_and_leaves_nothing_loaded(actor, make_lora, hash_matches):
    good, bad = make_lora("good"), make_lora("broken")
    garbage = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
    get_object_store().save_stream(bad.file.name, io.BytesIO(garbage))
    if hash_matches:
        LoRA.objects.filter(id=bad.id).update(sha256=hashlib.sha256(garbage).hexdigest(), file_size=len(garbage))
    job = run(actor, loras=[(good, 1.0, "high"), (bad, 1.0, "low")])
    assert job.status == JobStatus.FAILED
    assert "'broken'" in job.error
    assert pipeline_is_clean()


def test_mismatched_lora_fails_naming_it(actor, make_lora):
    lora = make_lora("mismatch")
    other = write_lora(settings.LORASITE_WORKER_CACHE_DIR.parent / "wide.safetensors", family="wan-1.3b", blocks=1)
    get_object_store().save_file(lora.file.name, other)
    LoRA.objects.filter(id=lora.id).update(
        sha256=hashlib.sha256(other.read_bytes()).hexdigest(), file_size=other.stat().st_size
    )
    job = run(actor, loras=[(lora, 1.0, "high")])
    assert job.status == JobStatus.FAILED and "'mismatch'" in job.error
    assert pipeline_is_clean()


def test_cancel_between_steps_cleans_up(actor, make_lora, monkeypatch):
    lora = make_lora("c")
    original = services.job_progress

    def cancel_after_first_step(*, job_id, step, total):
        GenerationJob.objects.filter(id=job_id).update(cancel_requested=True)
        original(job_id=job_id, step=step, total=total)

    monkeypatch.setattr(services, "job_progress", cancel_after_first_step)
    job = run(actor, loras=[(lora, 1.0, "both")])
    assert job.status == JobStatus.CANCELLED and job.output_key == ""
    assert pipeline_is_clean()


def test_soft_time_limit_fails_with_message_and_cleans_up(actor, make_lora, monkeypatch):
    lora = make_lora("slow")

    def too_slow(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(worker, "run_pipeline", too_slow)
    job = run(actor, loras=[(lora, 1.0, "high")])
    assert job.status == JobStatus.FAILED and "time limit" in job.error
    assert pipeline_is_clean()


def test_redelivered_job_runs_once_more_then_fails(actor):
    job = services.generation_create(actor=actor, model=WAN, prompt="x")
    GenerationJob.objects.filter(id=job.id).update(status=JobStatus.RUNNING, attempts=1, started_at=timezone.now())
    worker.execute_job(str(job.id), worker_name="w2")  # the worker died once: run again
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2
    stuck = services.generation_create(actor=actor, model=WAN, prompt="y")
    GenerationJob.objects.filter(id=stuck.id).update(
        status=JobStatus.RUNNING, attempts=settings.LORASITE_TASK_MAX_ATTEMPTS
    )
    worker.execute_job(str(stuck.id), worker_name="w3")
    stuck.refresh_from_db()
    assert stuck.status == JobStatus.FAILED and "stopped" in stuck.error


def test_beat_fails_a_stalled_job_that_has_had_its_attempts(actor):
    from datetime import timedelta

    job = services.generation_create(actor=actor, model=WAN, prompt="x")
    long_ago = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 600)
    GenerationJob.objects.filter(id=job.id).update(
        status=JobStatus.RUNNING,
        attempts=settings.LORASITE_TASK_MAX_ATTEMPTS,
        started_at=long_ago,
        attempt_started_at=long_ago,
    )
    assert services.jobs_recover_stalled() == {"requeued": 0, "failed": 1, "cancelled": 0}
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and f"stopped {settings.LORASITE_TASK_MAX_ATTEMPTS} times" in job.error


def test_cancelled_before_start_never_runs(actor):
    job = services.generation_create(actor=actor, model=WAN, prompt="x")
    services.generation_cancel(actor=actor, job=job)
    worker.execute_job(str(job.id), worker_name="w")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.attempts == 0


def test_a_failing_reset_fails_the_job_and_drops_the_pipeline(actor, make_lora, monkeypatch):
    lora = make_lora("style")
    run(actor)  # the pipeline and its manager exist
    assert WAN in worker.PIPELINES.loaded_keys()

    def broken_reset(self, *, keep_merged=False):
        raise RuntimeError("copy back failed")

    with monkeypatch.context() as patch:
        patch.setattr(AdapterManager, "reset", broken_reset)
        job = run(actor, loras=[(lora, 1.0, "both")])
    assert job.status == JobStatus.FAILED
    assert job.error == "Resetting the LoRA adapters failed, so the model was unloaded: RuntimeError: copy back failed"
    assert WAN not in worker.PIPELINES.loaded_keys() and WAN not in worker._ADAPTER_MANAGERS
    # The next job loads a fresh pipeline and runs normally.
    assert run(actor, loras=[(lora, 1.0, "both")]).status == JobStatus.SUCCEEDED
    assert WAN in worker.PIPELINES.loaded_keys()


def test_an_identical_next_job_reuses_the_merged_weights_and_a_failed_one_restores(actor, make_lora, monkeypatch):
    lora = make_lora("kept")
    base = frame_of(run(actor))
    first = run(actor, loras=[(lora, 0.7, "both")])
    second = run(actor, loras=[(lora, 0.7, "both")])
    manager = worker._ADAPTER_MANAGERS[WAN]
    assert manager.last_apply_stats.merge == "kept" and manager.merged_adapters == [f"lora_{lora.id}"]
    assert np.array_equal(frame_of(second), frame_of(first))
    assert pipeline_is_clean(after_success=True) and not pipeline_is_clean()

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(worker, "run_pipeline", out_of_memory)
    assert run(actor, loras=[(lora, 0.7, "both")]).status == JobStatus.FAILED
    assert manager.merged_adapters == [] and pipeline_is_clean()
    monkeypatch.undo()
    assert np.array_equal(frame_of(run(actor)), base)


def rot_cached(lora: LoRA) -> None:
    """Flip a bit in the worker's cached copy of `lora`, keeping the size and mtime its cache sidecar records."""
    import os

    path = worker.lora_cache().root / lora.sha256[:2] / f"{lora.sha256}.safetensors"
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last tensor value: the file still parses, only its weights are wrong
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def forget_adapters(model_key: str = WAN) -> None:
    """A new manager for the next job (as after a worker restart): nothing resident, merged or host-tiered, so the
    job reads its LoRA files from the cache."""
    manager = worker._ADAPTER_MANAGERS.pop(model_key, None)
    if manager is not None:
        manager.reset()  # copies back weights a succeeded job left merged


def test_a_cached_lora_rotted_in_place_is_fetched_again_and_the_job_succeeds(actor, make_lora, monkeypatch):
    lora = make_lora("rot")
    clean = run(actor, loras=[(lora, 1.0, "both")])
    assert clean.status == JobStatus.SUCCEEDED, clean.error
    rot_cached(lora)
    forget_adapters()
    store = get_object_store()
    fetches = []
    download_to = type(store).download_to
    monkeypatch.setattr(
        type(store), "download_to", lambda self, key, path: (fetches.append(key), download_to(self, key, path))
    )
    job = run(actor, loras=[(lora, 1.0, "both")])
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert fetches == [lora.file.name]
    np.testing.assert_array_equal(frame_of(job), frame_of(clean))
    assert pipeline_is_clean(after_success=True)

    # Rotting again right after every fetch: the second mismatch fails the job, naming the LoRA.
    forget_adapters()
    path_for = worker.LoRACache.path_for

    def path_for_then_rot(self, **kwargs):
        path = path_for(self, **kwargs)
        rot_cached(lora)
        return path

    monkeypatch.setattr(worker.LoRACache, "path_for", path_for_then_rot)
    failed = run(actor, loras=[(lora, 1.0, "both")])
    assert failed.status == JobStatus.FAILED
    assert failed.error.startswith(f"LoRA 'rot' (lora_{lora.id}): ") and f"expected {lora.sha256}" in failed.error
    assert pipeline_is_clean()


def test_a_job_whose_merge_would_pass_the_fused_backup_bound_runs_unfused(actor, make_lora):
    lora = make_lora("bounded")
    forget_adapters()
    merged = run(actor, loras=[(lora, 1.0, "both")])
    assert worker._ADAPTER_MANAGERS[WAN].last_apply_stats.merge == "merged"
    forget_adapters()
    with override_settings(LORASITE_FUSED_BACKUP_BYTES=0):
        bounded = run(actor, loras=[(lora, 1.0, "both")])
        stats = worker._ADAPTER_MANAGERS[WAN].last_apply_stats
    assert bounded.status == JobStatus.SUCCEEDED, bounded.error
    assert (stats.merge, stats.unfused_reason) == ("unfused", "fused backup bound")
    assert worker._ADAPTER_MANAGERS[WAN].pristine_backup_bytes == 0
    assert np.abs(frame_of(bounded).astype(int) - frame_of(merged).astype(int)).max() <= 1  # same LoRA, rounding
    assert pipeline_is_clean()
    forget_adapters()
