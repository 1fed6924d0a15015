"""At a GPU worker's start, log the memory plan of every model it serves (what `manage.py gpu_plan` prints), so
a model that cannot fit shows in the log before any job fails on it."""

import logging

from celery.signals import worker_ready

from generation.model_registry import model_registry
from generation.queues import model_of_queue
from generation.runtime.memory_plan import MemoryPlanError

logger = logging.getLogger(__name__)


@worker_ready.connect
def log_memory_plans(sender, **kwargs) -> None:
    """`sender` is the worker's consumer; the models are those of the GPU queues it consumes."""
    keys = [key for name in sender.app.amqp.queues.consume_from if (key := model_of_queue(name))]
    if not keys:
        return  # not a GPU worker
    from generation.worker import model_plan  # torch: in the worker process only

    registry = model_registry()
    for key in keys:
        model = registry.get(key)
        if model is None:
            logger.warning("Memory plan: this worker consumes the queue of unknown model %s", key)
            continue
        try:
            logger.info("Memory plan: %s", "\n".join(model_plan(model).describe()))
        except MemoryPlanError as error:
            logger.warning("Memory plan: %s cannot run on this worker: %s", key, error)
