"""Sending Celery messages after the database commit without losing work when the broker is down.

The row is committed first and its message sent after the commit (a worker must find the row). When
the broker refuses the message, the row stays saved with its `enqueued_at` empty, and a beat task
re-sends it once the broker is back; claiming is idempotent, so a message that did arrive despite
an error is harmless twice. The caller turns a refused send into a 503 (`ServiceUnavailable`).

A message the broker accepted can still be lost (a Redis restarted without persistence, a flushed
database). Beat re-sends a row still waiting LORASITE_RESEND_AFTER_SECONDS after its send when its
queue holds no message at all (`queue_backlog`): a queue with a backlog is being worked through, and
an empty one cannot hold the row's message. The worst a wrong guess costs is one duplicate message,
which the claim turns into a no-op.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from kombu.exceptions import ChannelError, OperationalError

logger = logging.getLogger(__name__)

# kombu wraps the transports' connection errors in OperationalError; a socket error can still escape it.
BROKER_ERRORS = (OperationalError, OSError)

# How long a row may wait for its own request's send before beat re-sends it.
REDISPATCH_GRACE_SECONDS = 30


@dataclass
class Delivery:
    """The outcome of a send scheduled for after the commit: `failed` once the broker refused it."""

    failed: bool = False


def send_after_commit(send: Callable[[], None], *, description: str) -> Delivery:
    """Run `send` once the current transaction commits; a broker failure is logged and noted on the
    returned Delivery (checked by the caller after its atomic block), never raised from the commit."""
    delivery = Delivery()

    def run() -> None:
        try:
            send()
        except BROKER_ERRORS as error:
            logger.warning("The job queue refused %s (%s); beat re-sends it when the queue is back", description, error)
            delivery.failed = True

    transaction.on_commit(run)
    return delivery


def send_now(send: Callable[[], None], *, description: str) -> bool:
    """Beat's re-send: True when the broker took the message, False (logged) when it is still down."""
    try:
        send()
    except BROKER_ERRORS as error:
        logger.warning("The job queue still refuses %s (%s)", description, error)
        return False
    return True


def queue_backlog(queue: str) -> int | None:
    """The messages waiting in `queue` (a worker's reserved ones are not counted); 0 for a queue the broker
    does not know (never declared, or lost with the broker's data); None when the broker does not answer."""
    from lorasite.celery import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
            try:
                return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:
                return 0
    except BROKER_ERRORS as error:
        logger.warning("The job queue does not answer for the size of %s (%s)", queue, error)
        return None
