from celery import shared_task
from celery.contrib.django.task import DjangoTask

from loras import services
from loras.services import dispatch


class _IngestTask(DjangoTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # A crash (storage gone, a converter bug) must not leave the row `processing` for ever.
        services.lora_fail_ingest(lora_id=args[0], reason=f"Processing failed: {type(exc).__name__}: {exc}")


@shared_task(name="loras.tasks.lora_ingest", base=_IngestTask, acks_late=True)
def lora_ingest(lora_id: int) -> None:
    services.lora_finish_ingest(lora_id=lora_id)


@shared_task(name="loras.tasks.lora_ingest_sweep")
def lora_ingest_sweep() -> dict[str, int]:
    return dispatch.loras_ingest_sweep()


@shared_task(name="loras.tasks.lora_storage_cleanup")
def lora_storage_cleanup() -> dict[str, int]:
    return services.lora_storage_cleanup()


@shared_task(name="loras.tasks.lora_purge_deleted")
def lora_purge_deleted() -> int:
    return services.lora_purge_deleted()
