"""Server-side halves of the dashboard defects (issue 10): the app's own 404 in every mode, workspace settings
(rename, delete with the name typed), confirmations on the members page, the API docs without a CDN."""

import pytest
from django.contrib.staticfiles import finders

from tests.factories import MembershipFactory
from tests.test_library_pages import make_lora
from workspaces.models import Membership, Role, StoragePurge, Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner():
    return MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")


def signed_in(client, membership):
    client.force_login(membership.user)
    return client


# --- 404 --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [True, False])
def test_missing_foreign_and_unknown_pages_render_the_app_404(client, settings, owner, debug):
    settings.DEBUG = debug
    foreign = make_lora(MembershipFactory().workspace, owner.user)
    signed_in(client, owner)
    for url in (
        "/w/studio/loras/999999/",
        f"/w/studio/loras/{foreign.id}/",
        f"/w/{foreign.workspace.slug}/loras/{foreign.id}/",
        "/w/nowhere/members/",
        "/no/such/page/",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "404.html" in [t.name for t in response.templates], url
        assert b"URLconf" not in response.content


@pytest.mark.parametrize("debug", [True, False])
def test_api_404s_stay_json(client, settings, owner, debug):
    settings.DEBUG = debug
    signed_in(client, owner)
    for url in ("/api/v1/workspaces/studio/loras/999999/", "/api/v1/no-such-endpoint/", "/storage/nope/"):
        response = client.get(url)
        assert response.status_code == 404 and response.json()["code"] == "not_found", url


def test_append_slash_still_redirects(client, owner):
    signed_in(client, owner)
    assert client.get("/w/studio/members").status_code == 301


# --- workspace settings -------------------------------------------------------------------------------------------


def test_settings_page_for_members_and_404_for_outsiders(client, owner):
    viewer = MembershipFactory(workspace=owner.workspace, role=Role.VIEWER)
    content = signed_in(client, viewer).get("/w/studio/settings/").content.decode()
    assert "Admins and owners rename the workspace." in content and "Delete the workspace" not in content
    outsider = MembershipFactory()
    assert signed_in(client, outsider).get("/w/studio/settings/").status_code == 404
    assert client.post("/w/studio/settings/", {"name": "Mine", "slug": "mine"}).status_code == 404
    assert client.post("/w/studio/delete/", {"confirm_name": "Studio"}).status_code == 404
    assert Workspace.objects.filter(slug="studio", name="Studio").exists()


def test_rename_checks_roles_and_input(client, owner):
    MembershipFactory(workspace__slug="taken")
    viewer = MembershipFactory(workspace=owner.workspace, role=Role.VIEWER)
    response = signed_in(client, viewer).post("/w/studio/settings/", {"name": "Mine", "slug": "mine"})
    assert response.status_code == 403 and "your role is viewer" in response.content.decode()

    signed_in(client, owner)
    for data, status, problem in [
        ({"name": "", "slug": "studio"}, 400, "This field is required."),
        ({"name": "x" * 101, "slug": "studio"}, 400, "at most 100 characters"),
        ({"name": "Studio", "slug": "not a slug"}, 400, "Enter a valid “slug”"),
        ({"name": "Studio", "slug": "taken"}, 409, "This slug is already taken."),
    ]:
        response = client.post("/w/studio/settings/", data)
        assert response.status_code == status and problem in response.content.decode(), data
    assert Workspace.objects.filter(slug="studio", name="Studio").exists()

    response = client.post("/w/studio/settings/", {"name": "Studio Berlin", "slug": "studio-berlin"})
    assert response.status_code == 302 and response["Location"] == "/w/studio-berlin/settings/"
    assert Workspace.objects.get(id=owner.workspace_id).name == "Studio Berlin"


def test_delete_needs_the_name_typed_and_an_owner(client, owner):
    admin = MembershipFactory(workspace=owner.workspace, role=Role.ADMIN)
    response = signed_in(client, admin).post("/w/studio/delete/", {"confirm_name": "Studio"})
    assert response.status_code == 403 and "Only a workspace owner" in response.content.decode()

    signed_in(client, owner)
    for typed in ("", "studio", "Studio 2"):
        response = client.post("/w/studio/delete/", {"confirm_name": typed})
        assert response.status_code == 400, typed
    assert Workspace.objects.filter(id=owner.workspace_id).exists() and not StoragePurge.objects.exists()

    response = client.post("/w/studio/delete/", {"confirm_name": "Studio"}, follow=True)
    assert response.redirect_chain == [("/", 302)] and "Workspace “Studio” deleted." in response.content.decode()
    assert not Workspace.objects.filter(id=owner.workspace_id).exists()
    assert not Membership.objects.filter(workspace_id=owner.workspace_id).exists()
    assert StoragePurge.objects.get().prefix == f"workspaces/{owner.workspace_id}/"


# --- members, switcher, docs ------------------------------------------------------------------------------------


def test_remove_and_leave_are_behind_dialogs(client, owner):
    mira = MembershipFactory(workspace=owner.workspace, user__username="mira")
    content = signed_in(client, owner).get("/w/studio/members/").content.decode()
    assert content.count("<dialog") == 2 and "Remove mira?" in content and "Leave “Studio”?" in content
    # The row's own buttons only open the dialogs; the submit buttons are inside them.
    assert content.count('name="action" value="remove"') == 2
    assert content.count("data-dialog-open=") == 2 and " open>" not in content
    # Without JavaScript the row's link reloads the page with that one dialog open.
    content = client.get(f"/w/studio/members/?remove={mira.user_id}").content.decode()
    assert content.count(" open>") == 1 and f'id="remove-dialog-{mira.user_id}"' in content.split(" open>")[0][-400:]
    for junk in ("abc", "-1", "99999999999999999999"):
        response = client.get(f"/w/studio/members/?remove={junk}")
        assert response.status_code == 200 and " open>" not in response.content.decode(), junk


def test_switcher_names_each_workspace_by_slug(client, owner):
    MembershipFactory(user=owner.user, workspace__name="Studio", workspace__slug="studio-2")
    content = signed_in(client, owner).get("/w/studio/members/").content.decode()
    assert "/w/studio/</span>" in content and "/w/studio-2/</span>" in content


def test_api_docs_use_no_cdn(client, owner):
    content = signed_in(client, owner).get("/api/v1/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in content
    assert "cdn" not in content.lower()
    # collectstatic gathers it for whitenoise like the app's own files.
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
