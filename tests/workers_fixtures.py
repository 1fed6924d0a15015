"""Live GPU workers as the web process sees them, announced straight into the worker registry (no worker process):
for the workers API, the operator page and the LoRA page's "where it is" part."""

import time

import pytest

from generation import worker_registry
from generation.queues import worker_queue
from tests.factories import LoRAFactory

MODEL = "wan-ti2v-demo"


@pytest.fixture
def announced(request, settings, tmp_path, workspace):
    """Two live workers: w1 holds the LoRA resident, w2 has it on disk; the records are withdrawn afterwards."""
    if not settings.USING_REDIS:
        settings.VAR_DIR = tmp_path  # the file registry of the embedded broker
    lora = LoRAFactory(workspace=workspace, name="Ink wash", base_model="wan-demo", module_shapes={})
    stamp = time.monotonic_ns()
    names = [f"w1-{stamp}@host", f"w2-{stamp}@host"]
    statuses = [
        {
            "queue": worker_queue(names[0]),
            "device": "cuda:0",
            "free_memory_bytes": 40 * 1024**3,
            "total_memory_bytes": 80 * 1024**3,
            "pipelines": [MODEL],
            "adapters": {MODEL: {"merged": [], "resident": [lora.sha256], "host_tier": [lora.sha256]}},
            "disk": [lora.sha256],
            "disk_count": 1,
            "cache_bytes": 1024,
            "cache_max_bytes": 4096,
            "current_job": "",
            "counters": {"jobs": 3, "downloads": 1},
        },
        {"queue": worker_queue(names[1]), "device": "cpu", "disk": [lora.sha256], "disk_count": 1},
    ]
    for name, status in zip(names, statuses, strict=True):
        worker_registry.announce(name=name, models=[MODEL], started=time.time(), status=status)
    yield names, lora
    for name in names:
        worker_registry.withdraw(name=name)
        worker_registry.forget(name=name)


def staff(user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user
