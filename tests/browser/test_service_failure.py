"""A live update whose service is down shows the server's message on the page, in a real Chromium."""

import pytest
from botocore.exceptions import EndpointConnectionError
from playwright.sync_api import expect

from loras import selectors
from tests.factories import MembershipFactory
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_live_search_with_storage_down_shows_the_message_and_keeps_the_page(page, sign_in, monkeypatch):
    owner = MembershipFactory(role=Role.OWNER, workspace__slug="studio").user
    sign_in(owner)
    page.goto("/w/studio/loras/")
    search = page.get_by_role("searchbox", name="Search")
    expect(search).to_be_visible()

    def storage_down(**kwargs):
        raise EndpointConnectionError(endpoint_url="http://s3.invalid")

    monkeypatch.setattr(selectors, "lora_library", storage_down)  # the live server runs in this process
    search.fill("anything")
    expect(page.get_by_role("alert")).to_have_text("File storage is unavailable; try again shortly.")
    expect(search).to_be_visible()  # the rest of the page is still there
