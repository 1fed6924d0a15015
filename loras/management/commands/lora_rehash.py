"""Backfill: the hashes of LoRAs stored before lorasite computed them (AutoV2, AutoV3, BLAKE3), each file read once."""

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from loras.models import LoRA
from loras.services import lora_rehash
from workspaces.models import Workspace


class Command(BaseCommand):
    help = "Compute the missing hashes (sha256, AutoV2, AutoV3, BLAKE3) of stored LoRA files, reading each file once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workspace", default="", help="Only this workspace (slug); default: every workspace.")

    def handle(self, *args, workspace: str, **options) -> None:
        missing = Q(sha256="") | Q(autov2="") | Q(autov3="") | Q(blake3="")
        loras = LoRA.objects.filter(missing).exclude(file="").order_by("id")
        if workspace:
            if not Workspace.objects.filter(slug=workspace).exists():
                raise CommandError(f"No workspace with slug '{workspace}'.")
            loras = loras.filter(workspace__slug=workspace)
        hashed = problems = 0
        for lora_id in loras.values_list("id", flat=True):
            try:
                lora, problem = lora_rehash(lora_id=lora_id)
            except FileNotFoundError:
                lora, problem = LoRA.objects.get(id=lora_id), "its stored object is missing"
            if problem:
                self.stderr.write(f"LoRA {lora.id} ('{lora.name}'): {problem}")
                problems += 1
            else:
                hashed += 1
        self.stdout.write(f"{hashed} LoRA{'s' if hashed != 1 else ''} hashed; {problems} with problems.")
