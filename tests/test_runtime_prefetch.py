"""A prefetch between jobs (AdapterManager.warm, generation/worker.py prefetch_lora) converts a LoRA file into the
host tier without loading it onto the device: the first job using it then loads it from host memory, not its file."""

from pathlib import Path

from generation.runtime.adapters import AdapterManager, AdapterSpec
from generation.runtime.pipelines import PipelineRegistry
from tests.runtime_fixtures import write_lora


def test_a_warmed_lora_is_applied_from_the_host_tier(demo_models: dict[str, Path], tmp_path: Path) -> None:
    pipe = PipelineRegistry().get("wan-ti2v-demo", path=demo_models["wan-ti2v-demo"], pipeline_class="WanPipeline")
    manager = AdapterManager(pipe)
    path = write_lora(tmp_path / "style.safetensors", seed=3)
    assert manager.warm(path=path) is True
    assert manager.host_tier.paths == [path] and manager.resident_adapters == [] and pipe.get_list_adapters() == {}
    manager.apply([AdapterSpec(lora_id=1, display_name="style", path=path, weight=1.0, expert="high")])
    try:
        assert manager.last_apply_stats.sources == {"lora_1": "host_tier"}
    finally:
        manager.reset()
    assert manager.warm(path=path) is True  # already there: nothing read again
