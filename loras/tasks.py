from celery import shared_task

from loras import services


@shared_task(name="loras.tasks.lora_ingest", acks_late=True)
def lora_ingest(lora_id: int) -> None:
    services.lora_finish_ingest(lora_id=lora_id)


@shared_task(name="loras.tasks.lora_storage_cleanup")
def lora_storage_cleanup() -> dict[str, int]:
    return services.lora_storage_cleanup()


@shared_task(name="loras.tasks.lora_purge_deleted")
def lora_purge_deleted() -> int:
    return services.lora_purge_deleted()
