import pytest

from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory
from workspaces.models import Membership, Role

pytestmark = pytest.mark.django_db


def test_sign_in_page_and_redirect(client):
    assert client.get("/").status_code == 302
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b"Sign in" in response.content


def test_home_lists_only_my_workspaces(client):
    me = UserFactory()
    MembershipFactory(user=me, workspace=WorkspaceFactory(name="Mine"))
    WorkspaceFactory(name="Theirs")
    client.force_login(me)
    content = client.get("/").content.decode()
    assert "Mine" in content and "Theirs" not in content


def test_other_workspace_pages_are_404(client):
    me = UserFactory()
    other = WorkspaceFactory(slug="other")
    client.force_login(me)
    assert client.get("/w/other/").status_code == 404
    assert client.get("/w/other/members/").status_code == 404
    victim = MembershipFactory(workspace=other).user
    assert client.post(f"/w/other/members/{victim.id}/", {"action": "remove"}).status_code == 404
    assert Membership.objects.filter(user=victim).exists()


def test_create_workspace_form_errors_next_to_field(client):
    me = UserFactory()
    client.force_login(me)
    WorkspaceFactory(slug="taken")
    response = client.post("/workspaces/new/", {"name": "X", "slug": "taken"})
    assert response.status_code == 400
    assert "This slug is already taken." in response.content.decode()
    response = client.post("/workspaces/new/", {"name": "Fresh"})
    assert response.status_code == 302 and response["Location"] == "/w/fresh/"


def test_members_page_last_owner_message(client):
    me = UserFactory()
    workspace = WorkspaceFactory(slug="solo")
    MembershipFactory(user=me, workspace=workspace, role=Role.OWNER)
    client.force_login(me)
    response = client.post(f"/w/solo/members/{me.id}/", {"action": "role", "role": "member"}, follow=True)
    assert "last owner" in response.content.decode()
    assert Membership.objects.get(user=me).role == Role.OWNER


def test_members_page_add_by_email(client):
    me = UserFactory()
    workspace = WorkspaceFactory(slug="team")
    MembershipFactory(user=me, workspace=workspace, role=Role.ADMIN)
    UserFactory(username="erin", email="erin@example.com")
    client.force_login(me)
    response = client.post("/w/team/members/", {"user": "erin@example.com", "role": "viewer"})
    assert response.status_code == 302
    assert Membership.objects.get(user__username="erin").role == Role.VIEWER
    response = client.post("/w/team/members/", {"user": "ghost", "role": "viewer"})
    assert response.status_code == 400 and "No user with this username or email." in response.content.decode()


def test_template_comments_close_on_their_line():
    """Django's {# #} comments are single-line: one spread over two lines renders as text on every page."""
    from pathlib import Path

    templates = Path(__file__).resolve().parent.parent / "templates"
    unclosed = [
        f"{path.relative_to(templates)}:{number}"
        for path in templates.rglob("*.html")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "{#" in line and "#}" not in line.split("{#", 1)[1]
    ]
    assert not unclosed, unclosed
