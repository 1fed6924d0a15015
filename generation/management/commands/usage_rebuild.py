"""python manage.py usage_rebuild [--workspace SLUG]: recompute the usage counters behind the LoRA page's metrics."""

from django.core.management.base import BaseCommand, CommandError

from generation.usage import usage_counters_rebuild
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Recompute the maintained usage counters (generations, outcomes, ratings, last use per LoRA and per model "
        "with no LoRA) from the jobs and ratings, for every workspace or one. Beat does it daily."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workspace", help="the slug of one workspace (default: all)")

    def handle(self, *args, workspace: str | None, **options) -> None:
        workspaces = Workspace.objects.order_by("id")
        if workspace:
            workspaces = workspaces.filter(slug=workspace)
            if not workspaces.exists():
                raise CommandError(f"No workspace with the slug {workspace!r}.")
        for slug, workspace_id in workspaces.values_list("slug", "id"):
            rows = usage_counters_rebuild(workspace_id=workspace_id)
            self.stdout.write(f"{slug}: {rows} counter row(s) rebuilt")
