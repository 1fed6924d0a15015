from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Build the tiny random-weight demo pipelines (Wan 2.2 A14B-style, single-expert Wan, FLUX) offline."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--target", type=Path, default=settings.LORASITE_MODELS_DIR)
        parser.add_argument("--force", action="store_true", help="Rebuild even if present.")

    def handle(self, *args, target: Path, force: bool, **options) -> None:
        from generation.runtime.demo_models import build_demo_models  # torch: only for this command

        for key, path in build_demo_models(target, force=force).items():
            self.stdout.write(f"{key}: {path}")
