"""Workspace and member endpoints: the role matrix, the last-owner rule, slugs and bad input."""

import pytest
from rest_framework.test import APIClient

from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory
from workspaces.models import Membership, Role, Workspace

pytestmark = pytest.mark.django_db

ROLES = ["owner", "admin", "member", "viewer", "outsider", "anonymous"]


def _client(role: str, workspace: Workspace) -> APIClient:
    client = APIClient()
    if role == "anonymous":
        return client
    user = UserFactory()
    if role != "outsider":
        MembershipFactory(workspace=workspace, user=user, role=role)
    client.force_authenticate(user)
    return client


def _setup():
    """A workspace with a second owner (so owner actions are allowed) and a plain member to act on."""
    workspace = WorkspaceFactory(slug="acme")
    MembershipFactory(workspace=workspace, role=Role.OWNER)
    target = MembershipFactory(workspace=workspace, role=Role.MEMBER).user
    extra = UserFactory(username="newcomer")
    return workspace, target, extra


# (method, path template, body, expected status per role)
MATRIX = [
    (
        "get",
        "/api/v1/workspaces/{slug}/",
        None,
        dict(owner=200, admin=200, member=200, viewer=200, outsider=404, anonymous=401),
    ),
    (
        "patch",
        "/api/v1/workspaces/{slug}/",
        {"name": "Renamed"},
        dict(owner=200, admin=200, member=403, viewer=403, outsider=404, anonymous=401),
    ),
    (
        "delete",
        "/api/v1/workspaces/{slug}/",
        None,
        dict(owner=204, admin=403, member=403, viewer=403, outsider=404, anonymous=401),
    ),
    (
        "get",
        "/api/v1/workspaces/{slug}/members/",
        None,
        dict(owner=200, admin=200, member=200, viewer=200, outsider=404, anonymous=401),
    ),
    (
        "post",
        "/api/v1/workspaces/{slug}/members/",
        {"user": "newcomer", "role": "member"},
        dict(owner=201, admin=201, member=403, viewer=403, outsider=404, anonymous=401),
    ),
    (
        "patch",
        "/api/v1/workspaces/{slug}/members/{target}/",
        {"role": "viewer"},
        dict(owner=200, admin=200, member=403, viewer=403, outsider=404, anonymous=401),
    ),
    (
        "delete",
        "/api/v1/workspaces/{slug}/members/{target}/",
        None,
        dict(owner=204, admin=204, member=403, viewer=403, outsider=404, anonymous=401),
    ),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method,path,body,expected", MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_role_matrix(role, method, path, body, expected):
    workspace, target, _ = _setup()
    client = _client(role, workspace)
    response = getattr(client, method)(path.format(slug=workspace.slug, target=target.id), body, format="json")
    assert response.status_code == expected[role], response.content
    if response.status_code >= 400:
        assert response.json()["message"]


@pytest.mark.parametrize("role", ROLES)
def test_list_and_create_matrix(role):
    workspace, _, _ = _setup()
    client = _client(role, workspace)
    listing = client.get("/api/v1/workspaces/")
    created = client.post("/api/v1/workspaces/", {"name": "Mine"}, format="json")
    if role == "anonymous":
        assert listing.status_code == created.status_code == 401
        return
    assert listing.status_code == 200
    slugs = [w["slug"] for w in listing.json()["results"]]
    assert slugs == ([] if role == "outsider" else ["acme"])
    assert created.status_code == 201 and created.json()["role"] == "owner"


def test_creator_becomes_owner_and_sees_only_own_workspaces(client_for):
    user = UserFactory()
    WorkspaceFactory(name="Someone else's")
    response = client_for(user).post("/api/v1/workspaces/", {"name": "Studio Ghibli Fans"}, format="json")
    assert response.status_code == 201
    assert response.json()["slug"] == "studio-ghibli-fans"
    assert Membership.objects.get(user=user).role == Role.OWNER
    assert [w["name"] for w in client_for(user).get("/api/v1/workspaces/").json()["results"]] == ["Studio Ghibli Fans"]


def test_slug_is_unique(client_for):
    user = UserFactory()
    client = client_for(user)
    assert client.post("/api/v1/workspaces/", {"name": "A", "slug": "team"}, format="json").status_code == 201
    response = client.post("/api/v1/workspaces/", {"name": "B", "slug": "team"}, format="json")
    assert response.status_code == 409
    assert "slug" in response.json()["errors"]
    # Derived slugs never collide: a suffix is added.
    assert client.post("/api/v1/workspaces/", {"name": "Team"}, format="json").json()["slug"] == "team-2"
    assert sorted(Workspace.objects.values_list("slug", flat=True)) == ["team", "team-2"]


def test_renaming_slug_to_a_taken_one_conflicts(client_for):
    user = UserFactory()
    MembershipFactory(user=user, workspace=WorkspaceFactory(slug="one"), role=Role.OWNER)
    WorkspaceFactory(slug="two")
    response = client_for(user).patch("/api/v1/workspaces/one/", {"slug": "two"}, format="json")
    assert response.status_code == 409
    assert Workspace.objects.filter(slug="one").exists()


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({}, "name"),
        ({"name": "ok", "slug": "not a slug!"}, "slug"),
        ({"name": "ok", "slug": "s" * 51}, "slug"),
    ],
)
def test_bad_workspace_input_names_the_field(client_for, body, field):
    response = client_for(UserFactory()).post("/api/v1/workspaces/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert response.json()["message"]
    assert not Workspace.objects.exists()


def test_malformed_json_is_400(client_for):
    response = client_for(UserFactory()).post("/api/v1/workspaces/", data='{"name": ', content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["message"]


def test_unknown_role_is_400_naming_role(workspace, member_of, client_for):
    owner = member_of(Role.OWNER)
    UserFactory(username="bob")
    response = client_for(owner).post(
        f"/api/v1/workspaces/{workspace.slug}/members/", {"user": "bob", "role": "emperor"}, format="json"
    )
    assert response.status_code == 400
    assert "role" in response.json()["errors"]
    assert not Membership.objects.filter(user__username="bob").exists()


def test_add_member_by_email_and_unknown_user(workspace, member_of, client_for):
    client = client_for(member_of(Role.ADMIN))
    UserFactory(username="carol", email="Carol@Example.com")
    ok = client.post(f"/api/v1/workspaces/{workspace.slug}/members/", {"user": "carol@example.com"}, format="json")
    assert ok.status_code == 201 and ok.json()["username"] == "carol" and ok.json()["role"] == "member"
    again = client.post(f"/api/v1/workspaces/{workspace.slug}/members/", {"user": "carol"}, format="json")
    assert again.status_code == 409
    missing = client.post(f"/api/v1/workspaces/{workspace.slug}/members/", {"user": "nobody"}, format="json")
    assert missing.status_code == 400 and "user" in missing.json()["errors"]


def test_admin_cannot_grant_or_touch_owner(workspace, member_of, client_for):
    owner = member_of(Role.OWNER)
    admin_client = client_for(member_of(Role.ADMIN))
    UserFactory(username="dave")
    grant = admin_client.post(
        f"/api/v1/workspaces/{workspace.slug}/members/", {"user": "dave", "role": "owner"}, format="json"
    )
    assert grant.status_code == 403
    demote = admin_client.patch(
        f"/api/v1/workspaces/{workspace.slug}/members/{owner.id}/", {"role": "member"}, format="json"
    )
    assert demote.status_code == 403
    assert Membership.objects.get(user=owner).role == Role.OWNER


class TestLastOwner:
    def test_last_owner_cannot_be_demoted(self, workspace, member_of, client_for):
        owner = member_of(Role.OWNER)
        response = client_for(owner).patch(
            f"/api/v1/workspaces/{workspace.slug}/members/{owner.id}/", {"role": "admin"}, format="json"
        )
        assert response.status_code == 409
        assert "last owner" in response.json()["message"]
        assert Membership.objects.get(user=owner).role == Role.OWNER

    def test_last_owner_cannot_leave(self, workspace, member_of, client_for):
        owner = member_of(Role.OWNER)
        response = client_for(owner).delete(f"/api/v1/workspaces/{workspace.slug}/members/{owner.id}/")
        assert response.status_code == 409
        assert Membership.objects.filter(user=owner).exists()

    def test_last_owner_cannot_be_removed_by_admin(self, workspace, member_of, client_for):
        owner = member_of(Role.OWNER)
        response = client_for(member_of(Role.ADMIN)).delete(f"/api/v1/workspaces/{workspace.slug}/members/{owner.id}/")
        assert response.status_code in (403, 409)
        assert Membership.objects.filter(user=owner).exists()

    def test_owner_can_leave_when_another_owner_remains(self, workspace, member_of, client_for):
        owner, _ = member_of(Role.OWNER), member_of(Role.OWNER)
        response = client_for(owner).delete(f"/api/v1/workspaces/{workspace.slug}/members/{owner.id}/")
        assert response.status_code == 204
        assert client_for(owner).get(f"/api/v1/workspaces/{workspace.slug}/").status_code == 404


def test_any_member_can_leave(workspace, member_of, client_for):
    member_of(Role.OWNER)
    viewer = member_of(Role.VIEWER)
    assert client_for(viewer).delete(f"/api/v1/workspaces/{workspace.slug}/members/{viewer.id}/").status_code == 204


def test_member_of_another_workspace_is_404(member_of, client_for):
    mine, theirs = WorkspaceFactory(), WorkspaceFactory()
    me = member_of(Role.OWNER, ws=mine)
    stranger = member_of(Role.MEMBER, ws=theirs)
    response = client_for(me).patch(
        f"/api/v1/workspaces/{mine.slug}/members/{stranger.id}/", {"role": "viewer"}, format="json"
    )
    assert response.status_code == 404
