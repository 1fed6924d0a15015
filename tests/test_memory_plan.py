"""The memory planner: component bytes from headers or declared counts, placement per device size, forced
placement and storage dtype from the models file, the nothing-fits message, and the LoRA cost estimate."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from generation.model_registry import _apply_overrides, _defaults, model_registry
from generation.runtime import memory_plan
from generation.runtime.memory_plan import GiB, PlacementError, plan
from tests.lora_files import write_tensors

GB = 10**9


def shipped(key: str):
    return {model.key: model for model in _defaults(Path("/nonexistent"))}[key]


def test_sizes_come_from_the_demo_models_headers(demo_models) -> None:
    from generation.runtime.pipelines import PipelineRegistry

    model = model_registry()["wan22-a14b-demo"]
    sizes = {c.name: c for c in memory_plan.component_sizes(model)}
    pipe = PipelineRegistry().get(model.key, path=demo_models[model.key], pipeline_class=model.pipeline_class)
    for name, size in sizes.items():
        module = getattr(pipe, name)
        # Tied weights (T5's shared embedding) are stored once, as they are held in memory once.
        unique = {tensor.data_ptr(): tensor.numel() for tensor in module.state_dict().values()}
        assert size.params == sum(unique.values()), name
        assert size.source == "headers"
        assert size.largest_tensor_params == max(t.numel() for t in module.state_dict().values())
    assert set(sizes) == {"transformer", "transformer_2", "text_encoder", "vae"}
    assert {name: size.dtype for name, size in sizes.items()} == {
        "transformer": "bf16",
        "transformer_2": "bf16",
        "text_encoder": "bf16",
        "vae": "fp32",
    }
    assert (
        sizes["vae"].nbytes == sizes["vae"].params * 4
        and sizes["transformer"].nbytes == sizes["transformer"].params * 2
    )
    # Group offload moves the transformer's top-level blocks one at a time; the text encoder (no top-level
    # ModuleList) moves whole, as diffusers does.
    block = sum(t.numel() for t in pipe.transformer.blocks[0].state_dict().values())
    assert sizes["transformer"].largest_block_params == block
    assert sizes["text_encoder"].largest_block_params == 0
    assert sizes["text_encoder"].group_offload_bytes == sizes["text_encoder"].nbytes


def test_flux_vae_runs_in_bf16_and_wan_vae_in_fp32(demo_models) -> None:
    flux = {c.name: c.dtype for c in memory_plan.component_sizes(model_registry()["flux-demo"])}
    assert flux == {"transformer": "bf16", "text_encoder": "bf16", "text_encoder_2": "bf16", "vae": "bf16"}


def test_sharded_components_are_read_through_their_index(tmp_path: Path) -> None:
    model_dir = tmp_path / "sharded"
    component = model_dir / "transformer"
    component.mkdir(parents=True)
    (model_dir / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "WanPipeline",
                "transformer": ["diffusers", "WanTransformer3DModel"],
                "scheduler": ["diffusers", "UniPCMultistepScheduler"],
            }
        )
    )
    zero = lambda *shape: ("F32", shape, bytes(4 * math.prod(shape)))  # noqa: E731
    write_tensors(
        component / "diffusion_pytorch_model-00001-of-00002.safetensors",
        {"blocks.0.attn.weight": zero(8, 8), "patch_embedding.weight": zero(3, 4)},
    )
    write_tensors(
        component / "diffusion_pytorch_model-00002-of-00002.safetensors", {"blocks.1.attn.weight": zero(8, 4)}
    )
    weight_map = {
        "blocks.0.attn.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
        "patch_embedding.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
        "blocks.1.attn.weight": "diffusion_pytorch_model-00002-of-00002.safetensors",
    }
    (component / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = replace(shipped("wan22-ti2v-5b"), path=model_dir)
    (size,) = memory_plan.component_sizes(model)
    assert (size.name, size.params, size.source) == ("transformer", 64 + 12 + 32, "headers")
    assert (size.largest_block_params, size.block_params, size.largest_tensor_params) == (64, 96, 64)
    # bf16 at run time, whatever the file stores; non-block weights + the two blocks in flight.
    assert size.nbytes == 108 * 2 and size.group_offload_bytes == (12 + 2 * 64) * 2


def test_shipped_models_without_weights_use_declared_counts() -> None:
    model = shipped("wan22-t2v-a14b")
    sizes = memory_plan.component_sizes(model)
    assert {c.name: (c.params, c.source) for c in sizes} == {
        "transformer": (14_290_000_000, "declared"),
        "transformer_2": (14_290_000_000, "declared"),
        "text_encoder": (5_680_000_000, "declared"),
        "vae": (127_000_000, "declared"),
    }
    with pytest.raises(memory_plan.MemoryPlanError, match="no component_params declared"):
        memory_plan.component_sizes(replace(model, component_params={}))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("wan22-t2v-a14b", {24: "group_offload", 48: "model_offload", 80: "model_offload", 141: "gpu"}),
        ("wan22-ti2v-5b", {24: "model_offload", 48: "gpu", 80: "gpu", 141: "gpu"}),
        ("flux1-dev", {24: "group_offload", 48: "gpu", 80: "gpu", 141: "gpu"}),
    ],
)
def test_the_fastest_placement_that_fits(key: str, expected: dict[int, str]) -> None:
    model = shipped(key)
    plans = {gb: plan(model, gb * GB) for gb in expected}
    assert {gb: p.placement for gb, p in plans.items()} == expected
    for gb, p in plans.items():
        assert p.fits and p.peak_bytes <= gb * GB and not p.forced
        faster = memory_plan.PLACEMENTS[: memory_plan.PLACEMENTS.index(p.placement)]
        assert all(p.peaks[other] > gb * GB for other in faster)


def test_peaks_follow_the_documented_formulas() -> None:
    model = shipped("wan22-t2v-a14b")
    p = plan(model, 48 * GB)
    sizes = {c.name: c for c in p.components}
    reserve = p.reserve
    assert (reserve.width, reserve.height, reserve.frames) == (1280, 720, 121)
    # 31 latent frames x (720 / 16) x (1280 / 16) tokens.
    assert reserve.denoise_bytes == 31 * 45 * 80 * (6 * 5120 + 13824) * 2
    overhead = memory_plan.DEVICE_OVERHEAD_BYTES
    assert p.peaks["gpu"] == sum(c.nbytes for c in p.components) + reserve.largest + overhead
    # One expert at a time under model offload.
    assert p.peaks["model_offload"] == sizes["transformer"].nbytes + reserve.denoise_bytes + overhead
    assert p.resident_device_bytes == 0 and p.weight_bytes == sum(c.nbytes for c in p.components)
    assert plan(model, 141 * GB).resident_device_bytes == p.weight_bytes


def test_nothing_fits_names_the_gib_needed_and_available() -> None:
    model = shipped("wan22-t2v-a14b")
    needed = plan(model, None).peaks["sequential"]
    with pytest.raises(PlacementError) as error:
        plan(model, 4 * GiB)
    assert str(error.value) == (
        f"Wan 2.2 T2V-A14B does not fit this device: it needs at least {needed / GiB:.1f} GiB (sequential offload "
        "at 1280x720, 121 frames) but 4.0 GiB is available."
    )


def test_no_accelerator_means_cpu_placement() -> None:
    p = plan(shipped("flux1-dev"), None)
    assert p.placement == "cpu" and p.fits and p.peak_bytes == p.peaks["gpu"] and p.resident_device_bytes == 0
    assert "no accelerator" in p.describe()[0]


def test_models_file_forces_placement_and_fp8_storage() -> None:
    models = {model.key: model for model in _defaults(Path("/nonexistent"))}
    models = _apply_overrides(
        models, {"flux1-dev": {"placement": "sequential", "storage_dtype": "fp8"}, "wan22-ti2v-5b": {"placement": None}}
    )
    forced = plan(models["flux1-dev"], 141 * GB)
    assert (forced.placement, forced.forced, forced.storage_dtype) == ("sequential", True, "fp8")
    sizes = {c.name: c for c in forced.components}
    assert sizes["transformer"].storage_dtype == "fp8" and sizes["transformer"].nbytes == 11_900_000_000
    assert sizes["text_encoder_2"].storage_dtype == "bf16"  # layerwise casting is for the transformers only
    assert plan(models["wan22-ti2v-5b"], 141 * GB).placement == "gpu"  # `placement:` with no value: not forced
    # A forced placement is used even when the estimate says it does not fit; the plan says so.
    tight = plan(replace(models["flux1-dev"], placement="gpu"), 16 * GB)
    assert tight.placement == "gpu" and not tight.fits and "DOES NOT FIT" in tight.describe()[-1]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("placement", "offload", "'gpu', 'model_offload', 'group_offload', 'sequential'"),
        ("storage_dtype", "int4", "'bf16', 'fp8'"),
    ],
)
def test_bad_placement_or_storage_dtype_is_a_clear_error(field: str, value: str, expected: str) -> None:
    models = {model.key: model for model in _defaults(Path("/nonexistent"))}
    with pytest.raises(ImproperlyConfigured, match=f"flux1-dev.{field} is '{value}'; expected one of {expected}"):
        _apply_overrides(models, {"flux1-dev": {field: value}})


def test_declared_params_can_be_given_in_the_models_file() -> None:
    models = _apply_overrides(
        {},
        {
            "custom": {
                "display_name": "Custom",
                "family": "wan-14b",
                "kind": "video",
                "pipeline_class": "WanPipeline",
                "path": "/nonexistent",
                "experts": {"high": "transformer"},
                "capabilities": {
                    "resolutions": [[832, 480]],
                    "steps": [1, 50],
                    "default_steps": 30,
                    "default_guidance": 5.0,
                    "frame_counts": [81],
                },
                "dims": {"architecture": "wan", "hidden": 5120, "ffn": 13824, "layers": 40},
                "component_params": {"transformer": {"params": 14_000_000_000, "blocks": 40}, "vae": 127_000_000},
            }
        },
    )
    sizes = {c.name: c for c in memory_plan.component_sizes(models["custom"])}
    assert sizes["transformer"].largest_block_params == 350_000_000 and sizes["vae"].params == 127_000_000


def test_plan_describe_lists_every_component() -> None:
    lines = plan(shipped("wan22-t2v-a14b"), 80 * GB).describe()
    assert lines[0] == "wan22-t2v-a14b (Wan 2.2 T2V-A14B): device memory 74.5 GiB"
    assert [line.split()[0] for line in lines[1:5]] == ["transformer", "transformer_2", "text_encoder", "vae"]
    assert "(declared)" in lines[1] and "fp32" in lines[4]
    assert lines[-1].startswith("  placement model_offload (chosen), estimated peak ")


def test_lora_cost_fused_and_unfused() -> None:
    shapes = {"blocks.0.attn1.to_q": [5120, 5120], "blocks.0.ffn.net.0.proj": [5120, 13824]}
    unfused = memory_plan.lora_cost(
        file_size=400_000_000, file_dtype="F32", module_shapes=shapes, placement="model_offload", apply_mode="unfused"
    )
    assert unfused.adapter_bytes == 200_000_000  # rescaled to bf16
    assert (unfused.extra_device_bytes, unfused.extra_host_bytes) == (200_000_000, 0)
    assert unfused.load_seconds == pytest.approx(200_000_000 / memory_plan.ASSUMED_LOAD_BANDWIDTH_BYTES_PER_S)
    fused = memory_plan.lora_cost(
        file_size=200_000_000, file_dtype="BF16", module_shapes=shapes, placement="gpu", apply_mode="fused"
    )
    touched = (5120 * 5120 + 5120 * 13824) * 2
    assert (fused.adapter_bytes, fused.extra_device_bytes, fused.extra_host_bytes) == (200_000_000, 0, touched)
    on_cpu = memory_plan.lora_cost(
        file_size=200_000_000, file_dtype="BF16", module_shapes=shapes, placement="cpu", apply_mode="unfused"
    )
    assert (on_cpu.extra_device_bytes, on_cpu.extra_host_bytes) == (0, 200_000_000)
    both = memory_plan.lora_cost(
        file_size=200_000_000, file_dtype="BF16", module_shapes=shapes, placement="gpu", apply_mode="fused", experts=2
    )
    assert (both.adapter_bytes, both.extra_host_bytes) == (400_000_000, 2 * touched)  # a copy per expert
    assert set(on_cpu.as_dict()) == {
        "apply_mode",
        "adapter_bytes",
        "extra_device_bytes",
        "extra_host_bytes",
        "load_seconds",
    }
    # A model stored in fp8 never merges: its LoRAs are costed unfused whatever the configured mode.
    fp8 = memory_plan.lora_cost(
        file_size=200_000_000,
        file_dtype="BF16",
        module_shapes=shapes,
        placement="gpu",
        apply_mode="fused",
        storage_dtype="fp8",
    )
    assert (fp8.apply_mode, fp8.extra_device_bytes, fp8.extra_host_bytes) == ("unfused", 200_000_000, 0)
    assert fused.apply_mode == "fused"
    with pytest.raises(ValueError, match="apply_mode must be"):
        memory_plan.lora_cost(file_size=1, file_dtype="BF16", module_shapes={}, placement="gpu", apply_mode="merged")


def test_the_planner_imports_no_torch() -> None:
    code = "import sys, generation.runtime.memory_plan; print('torch' in sys.modules, 'django' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.stdout.split() == ["False", "False"]


# --- the worker: placement before loading, eviction between jobs -----------------------------------------------

WORKER_MODELS = ("wan22-a14b-demo", "wan-ti2v-demo")


@pytest.fixture
def fresh_worker(demo_models, tmp_path):
    from django.test import override_settings

    from generation import worker

    # Both demo Wan models at their common 32x32 only, so their activation reserves are equal and a device can be
    # sized to hold either one's peak but not that plus the other's weights.
    models_file = tmp_path / "models.yaml"
    models_file.write_text("wan22-a14b-demo:\n  capabilities:\n    resolutions: [[32, 32]]\n")
    with override_settings(LORASITE_WORKER_CACHE_DIR=tmp_path / "cache", LORASITE_MODELS_FILE=str(models_file)):
        worker.lora_cache.cache_clear()
        for key in WORKER_MODELS:
            worker.PIPELINES.drop(key)
        yield worker
        for key in WORKER_MODELS:
            worker.PIPELINES.drop(key)
    worker.lora_cache.cache_clear()


@pytest.fixture
def actor(workspace, member_of):
    from workspaces.models import Role

    return workspace.memberships.get(user=member_of(Role.OWNER))


def run_job(worker, actor, model: str):
    from generation import services

    job = services.generation_create(actor=actor, model=model, prompt="a cat", params={"seed": 1}, loras=[])
    worker.execute_job(str(job.id), worker_name="test@worker")
    job.refresh_from_db()
    return job


@pytest.mark.django_db
def test_a_model_that_fits_nowhere_fails_the_job_before_loading(fresh_worker, actor) -> None:
    from django.test import override_settings

    with override_settings(LORASITE_GPU_MEMORY_BYTES=512 * 1024**2):
        job = run_job(fresh_worker, actor, "wan-ti2v-demo")
    assert job.status == "failed"
    assert job.error.startswith("Wan single expert (demo) does not fit this device: it needs at least 1.0 GiB")
    assert job.error.endswith("but 0.5 GiB is available.")
    assert "model_load" not in job.timings and fresh_worker.PIPELINES.loaded_keys().count("wan-ti2v-demo") == 0


@pytest.mark.django_db
def test_jobs_alternating_between_two_models_that_do_not_fit_together_all_succeed(fresh_worker, actor, caplog) -> None:
    from django.test import override_settings

    from generation.model_registry import model_registry

    alone = [plan(model_registry()[key], None) for key in WORKER_MODELS]
    device_bytes = min(alone[0].weight_bytes + alone[1].peaks["gpu"], alone[1].weight_bytes + alone[0].peaks["gpu"]) - 1
    assert device_bytes >= max(p.peaks["gpu"] for p in alone)
    with override_settings(LORASITE_GPU_MEMORY_BYTES=device_bytes):
        for key in (*WORKER_MODELS, *WORKER_MODELS):
            job = run_job(fresh_worker, actor, key)
            assert job.status == "succeeded", job.error
            assert [k for k in fresh_worker.PIPELINES.loaded_keys() if k in WORKER_MODELS] == [key]
            # The evicted pipeline's adapter manager went with it.
            assert [k for k in fresh_worker._ADAPTER_MANAGERS if k in WORKER_MODELS] == [key]
    assert caplog.text.count("Evicting pipeline") >= 3


def test_gpu_plan_prints_every_model_at_the_given_memory() -> None:
    import io

    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command("gpu_plan", "wan22-t2v-a14b", "flux1-dev", "--memory-bytes", str(48 * GB), stdout=out)
    expected = "\n".join(
        plan(shipped("wan22-t2v-a14b"), 48 * GB).describe() + plan(shipped("flux1-dev"), 48 * GB).describe()
    )
    assert out.getvalue().strip() == expected
    with pytest.raises(CommandError, match="Unknown model"):
        call_command("gpu_plan", "sdxl", stdout=io.StringIO())


@pytest.mark.django_db
def test_the_worker_logs_the_plans_of_the_models_it_serves_at_start(demo_models, caplog) -> None:
    from types import SimpleNamespace

    from django.test import override_settings

    from generation.queues import gpu_queue
    from generation.worker_startup import log_memory_plans

    queues = {gpu_queue("flux-demo"): None, gpu_queue("wan22-t2v-a14b"): None, "default": None}
    sender = SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=queues))))
    with override_settings(LORASITE_GPU_MEMORY_BYTES=8 * GiB), caplog.at_level("INFO"):
        log_memory_plans(sender)
    assert "Memory plan: flux-demo (FLUX (demo)): device memory 8.0 GiB" in caplog.text
    assert "placement gpu (chosen)" in caplog.text
    assert "Memory plan: wan22-t2v-a14b cannot run on this worker: Wan 2.2 T2V-A14B does not fit" in caplog.text


# --- what a job's LoRAs add: job API and Generate page ------------------------------------------------------


@pytest.fixture
def ready_lora(actor, tmp_path):
    from loras import services as lora_services
    from tests.ingest import ingest_ready
    from tests.lora_files import write_lora

    path = write_lora(tmp_path / "fox.safetensors", family="wan-demo", blocks=2, seed=3)
    return ingest_ready(actor=actor, path=path, options=lora_services.LoRAOptions(name="fox"))


def expected_cost(lora, *, placement: str, apply_mode: str, experts: int = 1) -> dict:
    cost = memory_plan.lora_cost(
        file_size=lora.file_size,
        file_dtype=lora.dtype,
        module_shapes=lora.flat_module_shapes,
        placement=placement,
        apply_mode=apply_mode,
        experts=experts,
    )
    return {"placement": placement, "apply_mode": apply_mode, **cost.as_dict()}


@pytest.mark.django_db
@pytest.mark.parametrize("apply_mode", ["fused", "unfused"])
def test_the_job_api_shows_what_each_lora_adds(demo_models, actor, ready_lora, client_for, apply_mode) -> None:
    from django.test import override_settings

    from generation import services

    job = services.generation_create(
        actor=actor,
        model="wan22-a14b-demo",
        prompt="a cat",
        params={"seed": 1},
        loras=[services.LoRARequest(lora_id=ready_lora.id, weight=1.0, expert="both")],
    )
    api = client_for(actor.user)
    with override_settings(LORASITE_LORA_APPLY=apply_mode):
        [entry] = api.get(f"/api/v1/workspaces/{actor.workspace.slug}/generations/{job.id}/").json()["loras"]
    # "both" on a two-expert model: a copy in each expert.
    assert entry["cost"] == expected_cost(ready_lora, placement="gpu", apply_mode=apply_mode, experts=2)
    assert (
        entry["cost"]["adapter_bytes"]
        == expected_cost(ready_lora, placement="gpu", apply_mode=apply_mode)["adapter_bytes"] * 2
        > 0
    )
    # Planned for a device size, the placement is the planner's.
    with override_settings(LORASITE_GPU_MEMORY_BYTES=8 * GiB, LORASITE_LORA_APPLY=apply_mode):
        [entry] = api.get(f"/api/v1/workspaces/{actor.workspace.slug}/generations/{job.id}/").json()["loras"]
    assert entry["cost"]["placement"] == "gpu"
    with override_settings(LORASITE_GPU_MEMORY_BYTES=GiB // 2, LORASITE_LORA_APPLY=apply_mode):
        [entry] = api.get(f"/api/v1/workspaces/{actor.workspace.slug}/generations/{job.id}/").json()["loras"]
    assert entry["cost"]["placement"] == ""  # the model fits nowhere on such a device


@pytest.mark.django_db
def test_the_generate_page_shows_the_cost_next_to_each_picked_lora(demo_models, actor, ready_lora, client) -> None:
    from django.test import override_settings

    from generation.templatetags.generation_extras import lora_cost_label

    client.force_login(actor.user)
    url = f"/w/{actor.workspace.slug}/generate/"
    with override_settings(LORASITE_LORA_APPLY="unfused"):
        html = client.get(
            url, {"model": "wan22-a14b-demo", "lora_id": ready_lora.id, "lora_weight": "1", "lora_expert": "high"}
        ).content.decode()
    label = lora_cost_label(expected_cost(ready_lora, placement="gpu", apply_mode="unfused"))
    assert label.startswith("est. +") and "on the GPU, ~" in label
    assert html.count(label) == 2  # the picked row, and the picker option new rows are filled from
    fused = lora_cost_label(expected_cost(ready_lora, placement="gpu", apply_mode="fused"))
    assert fused.startswith("est. no extra GPU memory (merged), ") and "host backup" in fused


@pytest.mark.django_db
def test_a_job_with_loras_on_an_fp8_model_runs_them_unfused(fresh_worker, actor, ready_lora, client_for, tmp_path):
    from django.test import override_settings

    from generation import services

    models_file = tmp_path / "fp8.yaml"
    models_file.write_text("wan22-a14b-demo:\n  storage_dtype: fp8\n")
    with override_settings(LORASITE_MODELS_FILE=str(models_file)):
        job = services.generation_create(
            actor=actor,
            model="wan22-a14b-demo",
            prompt="a cat",
            params={"seed": 1},
            loras=[services.LoRARequest(lora_id=ready_lora.id, weight=1.0, expert="high")],
        )
        fresh_worker.execute_job(str(job.id), worker_name="test@worker")
        [entry] = (
            client_for(actor.user)
            .get(f"/api/v1/workspaces/{actor.workspace.slug}/generations/{job.id}/")
            .json()["loras"]
        )
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    stats = fresh_worker._ADAPTER_MANAGERS["wan22-a14b-demo"].last_apply_stats
    assert (stats.merge, stats.unfused_reason) == ("unfused", "fp8 storage")
    assert entry["cost"]["apply_mode"] == "unfused"  # the estimate says what the worker does
