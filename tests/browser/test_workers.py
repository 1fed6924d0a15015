"""The operator page of the GPU workers and the LoRA page's "On the GPU workers" part, in a real browser, from
workers announced in the registry (tests/workers_fixtures.py)."""

import pytest
from playwright.sync_api import expect

from tests.workers_fixtures import staff
from workspaces.models import Membership, Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_operator_page_and_where_a_lora_is(page, sign_in, screenshot, announced, workspace, owner):
    (first, second), lora = announced
    Membership.objects.filter(user=owner, workspace=workspace).update(role=Role.OWNER)
    sign_in(staff(owner))
    page.goto("/ops/workers/")
    expect(page.get_by_role("heading", name="GPU workers")).to_be_visible()
    card = page.locator(".worker-card", has=page.get_by_role("heading", name=first))
    expect(card).to_contain_text("Ink wash")
    expect(card).to_contain_text("25% full")
    screenshot("workers")
    page.goto(f"/w/{workspace.slug}/loras/{lora.id}/")
    expect(page.get_by_role("region", name="On the GPU workers")).to_contain_text(
        f"resident on {first.split('@')[0]}, on disk at {second.split('@')[0]}"
    )
    page.get_by_role("region", name="On the GPU workers").scroll_into_view_if_needed()
    screenshot("lora-where")
