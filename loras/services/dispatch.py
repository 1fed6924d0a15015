"""Getting every `processing` LoRA to a final state: its `lora_ingest` message is sent after the commit and
re-sent by beat when the broker refused or lost it (lorasite/queueing.py); a row still `processing` long after its
message was sent (a worker lost twice, a task that never reported) is failed with the reason by beat."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from loras.models import LoRA, Status
from loras.services.processing import lora_fail_ingest
from lorasite.errors import ServiceUnavailable
from lorasite.queueing import REDISPATCH_GRACE_SECONDS, Delivery, queue_backlog, send_after_commit, send_now

INGEST_QUEUE = settings.CELERY_TASK_DEFAULT_QUEUE  # lora_ingest is not routed anywhere else
QUEUE_DOWN_MESSAGE = "The job queue is unavailable; your LoRA is saved and will be processed when it is back."


def _send_ingest(lora_id: int) -> None:
    from loras.tasks import lora_ingest

    lora_ingest.apply_async(args=[lora_id])
    LoRA.objects.filter(id=lora_id).update(enqueued_at=timezone.now())


def lora_ingest_after_commit(lora_id: int) -> Delivery:
    """Queue the row's ingest once the transaction commits; pass the Delivery to `raise_if_queue_refused`
    after the atomic block."""
    return send_after_commit(lambda: _send_ingest(lora_id), description=f"the ingest of LoRA {lora_id}")


def raise_if_queue_refused(delivery: Delivery, lora: LoRA) -> None:
    if delivery.failed:
        raise ServiceUnavailable(QUEUE_DOWN_MESSAGE, service="job queue", lora_id=lora.id)


def loras_ingest_sweep(*, now=None) -> dict[str, int]:
    """Beat: re-send the ingest of rows the broker never took or lost; fail rows `processing` past
    LORASITE_INGEST_STUCK_SECONDS since their message was sent (their stored copy is deleted)."""
    now = now or timezone.now()
    processing = LoRA.objects.filter(status=Status.PROCESSING).order_by("id")
    unsent = list(
        processing.filter(
            enqueued_at__isnull=True, updated_at__lt=now - timedelta(seconds=REDISPATCH_GRACE_SECONDS)
        ).values_list("id", flat=True)
    )
    bound = settings.LORASITE_INGEST_STUCK_SECONDS
    stuck = list(processing.filter(enqueued_at__lt=now - timedelta(seconds=bound)).values_list("id", flat=True))
    waiting = processing.filter(
        enqueued_at__lt=now - timedelta(seconds=settings.LORASITE_RESEND_AFTER_SECONDS)
    ).exclude(id__in=stuck)
    lost = list(waiting.values_list("id", flat=True)) if waiting.exists() and queue_backlog(INGEST_QUEUE) == 0 else []
    counts = {"resent": 0, "failed": 0}
    for lora_id in unsent + lost:
        if not send_now(lambda lora_id=lora_id: _send_ingest(lora_id), description=f"the ingest of LoRA {lora_id}"):
            break  # the broker is still down: the next beat run tries again
        counts["resent"] += 1
    for lora_id in stuck:
        lora_fail_ingest(
            lora_id=lora_id,
            reason=f"Processing did not finish within {bound} s of being queued; upload the file again.",
        )
        counts["failed"] += 1
    return counts
