"""Ingesting a LoRA in tests the way production does: the service, then the `lora_ingest` task's work inline.

In production the task runs on a worker once the row is committed; a test's transaction never commits, so the
task body (`lora_finish_ingest`) is called here directly, as the worker would, and its on-commit work (deleting
a refused file's object) runs as it would on commit.
"""

from pathlib import Path

from django.test import TestCase

from loras import services
from loras.models import LoRA
from workspaces.models import Membership


def ingest_ready(
    *,
    actor: Membership,
    path: Path,
    filename: str | None = None,
    options: services.LoRAOptions = services.LoRAOptions(),
) -> LoRA:
    """Upload a local file and finish its ingest: the row comes back ready (or failed with the reason)."""
    lora = services.lora_ingest_local_file(actor=actor, path=path, filename=filename or path.name, options=options)
    with TestCase.captureOnCommitCallbacks(execute=True):
        return services.lora_finish_ingest(lora_id=lora.id)
