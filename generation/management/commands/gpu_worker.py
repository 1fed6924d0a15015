"""Start a GPU worker that consumes exactly the queues of the models it serves.

    LORASITE_WORKER_MODELS=wan22-t2v-a14b,flux1-dev python manage.py gpu_worker -- -n gpu@%h

runs `celery -A lorasite worker -Q gpu.wan22-t2v-a14b,gpu.flux1-dev -c 1 --prefetch-multiplier 1`
(plus whatever follows `--`) in this process, so signals from a supervisor reach Celery directly.
"""

import argparse
import os
import shlex

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from generation.queues import celery_worker_argv, worker_models, worker_queues


class Command(BaseCommand):
    help = "Start a Celery GPU worker for the models in LORASITE_WORKER_MODELS (default: all with weights present)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Print the celery command line and exit.")
        parser.add_argument("celery_args", nargs=argparse.REMAINDER, help="Passed on to `celery worker` (after --).")

    def handle(self, *args, dry_run: bool, celery_args: list[str], **options) -> None:
        try:
            served = worker_models()
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        if not served:
            raise CommandError(
                "No model to serve: no enabled model has its weights installed. Set LORASITE_WORKER_MODELS "
                "or install weights (README: Using real weights)."
            )
        extra = celery_args[1:] if celery_args[:1] == ["--"] else celery_args
        argv = celery_worker_argv(worker_queues(served), extra)
        if dry_run:
            self.stdout.write(shlex.join(argv))
            return
        self.stdout.write(f"Serving {', '.join(served)}")
        self.stdout.flush()
        os.execv(argv[0], argv)
