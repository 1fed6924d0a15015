import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from workspaces.models import Workspace
from workspaces.services import workspace_create

DEMO_USERNAME = "demo"
DEMO_WORKSPACE_SLUG = "demo"


class Command(BaseCommand):
    help = "Create the demo user and workspace for local use; prints the password the first time only."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        User = get_user_model()
        user = User.objects.filter(username=DEMO_USERNAME).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_user(username=DEMO_USERNAME, email="demo@example.com", password=password)
            self.stdout.write(
                self.style.SUCCESS(f"Demo user created — username: {DEMO_USERNAME}  password: {password}")
            )
            self.stdout.write(
                "(This password is printed once. Reset it with: .venv/bin/python manage.py changepassword demo)"
            )
        else:
            self.stdout.write(f"Demo user '{DEMO_USERNAME}' exists (its password was printed when it was created).")
        if not Workspace.objects.filter(slug=DEMO_WORKSPACE_SLUG).exists():
            workspace_create(creator=user, name="Demo", slug=DEMO_WORKSPACE_SLUG)
            self.stdout.write(self.style.SUCCESS(f"Demo workspace '{DEMO_WORKSPACE_SLUG}' created."))
