"""Run the web server and a Celery worker (with embedded beat) together; Ctrl-C stops both."""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from generation.queues import celery_worker_argv, worker_models, worker_queues


class Command(BaseCommand):
    help = "Start the development web server and a Celery worker on the embedded defaults."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addr", default=os.environ.get("LORASITE_ADDR", "127.0.0.1:8000"))

    def handle(self, *args, addr: str, **options) -> None:
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        try:
            models = worker_models()
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        # One worker does everything here: the default queue and the queue of every model it can load.
        commands = {
            "web": [python, "manage.py", "runserver", addr, "--noreload"],
            "worker": celery_worker_argv(
                ["default", *worker_queues(models)],
                ["-P", "solo", "-B", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule"), "--loglevel", "INFO"],
            ),
        }
        processes = {name: subprocess.Popen(cmd, cwd=settings.BASE_DIR) for name, cmd in commands.items()}
        self.stdout.write(
            self.style.SUCCESS(f"lorasite is running at http://{addr}/  (Ctrl-C stops the web server and the worker)")
        )
        if not models:
            self.stderr.write(
                "No model has its weights installed, so the worker serves none. Run `python "
                "manage.py build_demo_models`."
            )
        try:
            while all(p.poll() is None for p in processes.values()):
                time.sleep(0.5)
            stopped = [name for name, p in processes.items() if p.poll() is not None]
            self.stderr.write(f"{', '.join(stopped)} exited; stopping the rest.")
        except KeyboardInterrupt:
            self.stdout.write("Stopping…")
        finally:
            for p in processes.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in processes.values():
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
