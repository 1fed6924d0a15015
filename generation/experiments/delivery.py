"""Queueing an experiment's jobs all or nothing when the job queue is down.

A sweep or an A/B test creates its jobs inside one transaction and each job's message is sent once it commits
(lorasite/queueing.py). Left at that, a broker that is down would leave a whole experiment saved with none of its
jobs sent, and the answer would still be 201. So the broker is asked first, as the last step before the commit:
when it does not answer, the experiment and its jobs roll back and the caller gets a 503 naming the job queue,
with nothing left behind. A broker that fails between that check and the sends (a race of a few milliseconds)
leaves the experiment whole and saved, its jobs waiting for beat's re-send like any job whose message was
refused; that is answered with a 503 too, naming the saved experiment."""

from django.db import transaction

from generation.models import GenerationJob
from lorasite.errors import ServiceUnavailable
from lorasite.health import check_broker
from lorasite.queueing import BROKER_ERRORS

SERVICE = "job queue"


def broker_require(*, what: str) -> None:
    """ServiceUnavailable ("no <what> was started") unless the broker answers; called inside the experiment's
    transaction, so raising rolls every row back."""
    try:
        check_broker()
    except BROKER_ERRORS as error:
        raise ServiceUnavailable(
            f"The job queue is unavailable; no {what} was started and nothing was saved. Try again shortly.",
            service=SERVICE,
        ) from error


def jobs_sent_require(*, job_ids: list, what: str, **saved) -> None:
    """After the experiment's transaction: ServiceUnavailable naming the saved experiment (`saved`, e.g.
    sweep_id=…) when the broker refused a job's message, which beat sends again once it is back."""
    if transaction.get_connection().in_atomic_block:
        return  # the messages go when the outer transaction commits: whether they reach the broker is not known yet
    if GenerationJob.objects.filter(id__in=job_ids, enqueued_at__isnull=True).exists():
        raise ServiceUnavailable(
            f"The job queue is unavailable; your {what} is saved and its jobs will start when it is back.",
            service=SERVICE,
            **saved,
        )
