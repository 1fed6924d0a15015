"""Where generation jobs are queued, and which queues a GPU worker consumes.

Every base model has its own Celery queue, `gpu.<model key>`, so a worker only ever receives jobs
for the models it serves (`LORASITE_WORKER_MODELS`). Each GPU worker also consumes a queue of its own,
`gpu.w.<node name>` (`@` as `_`), where the router (generation/routing.py) sends the jobs whose LoRAs it holds,
and `gpu.w.<node name>.prefetch`, where it gets the LoRAs to fetch ahead of the jobs (generation/scaleout.py).
The queues are not declared in settings: Celery creates a missing queue (exchange and routing key
named after it) both where a job is published and where a worker consumes it
(`task_create_missing_queues`, on by default).
Torch-free: the web process, the worker command line and the tests all name queues here.
"""

from __future__ import annotations

import re
import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from generation.model_registry import model_registry

GPU_QUEUE_PREFIX = "gpu."
WORKER_QUEUE_PREFIX = "gpu.w."


def gpu_queue(model_key: str) -> str:
    """The queue that jobs for `model_key` are published to."""
    return f"{GPU_QUEUE_PREFIX}{model_key}"


def worker_queue(worker_name: str) -> str:
    """The queue of one worker (its Celery node name, `name@host`): jobs routed to it. The embedded filesystem
    broker takes only letters, digits, `.`, `_` and `-` in a queue's name: `gpu.w.name_host`."""
    return WORKER_QUEUE_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", worker_name)


def prefetch_queue(worker_name: str) -> str:
    """The queue of one worker's prefetches (generation/scaleout.py): apart from its jobs, so that its job backlog
    is the length of its own queue on every broker."""
    return worker_queue(worker_name) + ".prefetch"


def model_of_queue(queue_name: str) -> str | None:
    """The model key a GPU queue serves; None for any other queue (`default`, a worker's own queues)."""
    if queue_name.startswith(WORKER_QUEUE_PREFIX) or not queue_name.startswith(GPU_QUEUE_PREFIX):
        return None
    return queue_name.removeprefix(GPU_QUEUE_PREFIX)


def worker_models() -> list[str]:
    """The model keys this worker serves: `LORASITE_WORKER_MODELS`, or when that is empty, every
    enabled model whose weights are present.

    A requested key that is unknown, disabled or has no weights is refused here, at start, rather
    than left to fail the first job that reaches the worker."""
    registry = model_registry()
    requested = settings.LORASITE_WORKER_MODELS
    if not requested:
        return [key for key, model in registry.items() if model.enabled and model.weights_present]
    problems = []
    for key in requested:
        model = registry.get(key)
        if model is None or not model.enabled:
            known = ", ".join(k for k, m in registry.items() if m.enabled)
            problems.append(f"'{key}' is not an enabled model (known: {known})")
        elif not model.weights_present:
            problems.append(f"the weights of '{key}' are not installed at {model.path}")
    if problems:
        raise ImproperlyConfigured("LORASITE_WORKER_MODELS: " + "; ".join(problems) + ".")
    return list(dict.fromkeys(requested))  # keep the order given, drop repeats


def worker_queues(model_keys: list[str]) -> list[str]:
    """The GPU queues a worker serving `model_keys` consumes."""
    return [gpu_queue(key) for key in model_keys]


def celery_worker_argv(queues: list[str], extra: list[str]) -> list[str]:
    """`celery worker` consuming `queues`: one process per GPU, one job at a time (the GPU holds one pipeline
    run). Every worker lorasite starts — `gpu_worker`, `run_dev`, the tests' — starts from this line."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "lorasite",
        "worker",
        "-Q",
        ",".join(queues),
        "-c",
        "1",
        "--prefetch-multiplier",
        "1",
        *extra,
    ]
