"""Operators copy LoRA files from the server's disk into a workspace's library."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from loras.services import LoRAOptions, lora_ingest_local_file
from lorasite.errors import ApplicationError
from workspaces.models import Membership, Role, Workspace


class Command(BaseCommand):
    help = "Import .safetensors LoRA files into a workspace (the originals are left untouched)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workspace", required=True, help="Workspace slug.")
        parser.add_argument("--name", default="", help="Display name (default: the file name).")
        parser.add_argument("--expert", choices=["high", "low", "both"], default="")
        parser.add_argument("paths", nargs="+", type=Path)

    def handle(self, *args, workspace: str, name: str, expert: str, paths: list[Path], **options) -> None:
        try:
            target = Workspace.objects.get(slug=workspace)
        except Workspace.DoesNotExist:
            raise CommandError(f"No workspace with slug '{workspace}'.") from None
        # Operators act as the workspace's first owner, so the row has a creator and role checks pass.
        actor = Membership.objects.filter(workspace=target, role=Role.OWNER).order_by("id").first()
        if actor is None:
            raise CommandError(f"Workspace '{workspace}' has no owner to import as.")
        failures = 0
        for path in paths:
            if not path.is_file():
                self.stderr.write(f"{path}: no such file")
                failures += 1
                continue
            try:
                lora = lora_ingest_local_file(
                    actor=actor, path=path.resolve(), filename=path.name, options=LoRAOptions(name=name, expert=expert)
                )
            except ApplicationError as error:
                self.stderr.write(f"{path}: {error.message}")
                failures += 1
            else:
                self.stdout.write(
                    f"{path}: imported as #{lora.id} '{lora.name}' v{lora.version} ({lora.base_model}, expert "
                    f"{lora.expert}); {lora.status} until a worker has checked what diffusers loads of it"
                )
        if failures:
            raise CommandError(f"{failures} of {len(paths)} files were not imported.")
