import pytest

from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    [
        "/admin/workspaces/workspace/?q=acme",
        "/admin/workspaces/membership/?role__exact=owner&q=user",
        "/admin/auth/user/?memberships__role=owner",
    ],
)
def test_admin_changelists_search_and_filter(admin_client, url):
    MembershipFactory(workspace__slug="acme", role="owner")
    response = admin_client.get(url)
    assert response.status_code == 200


def test_admin_workspace_change_page_has_membership_inline(admin_client):
    membership = MembershipFactory()
    response = admin_client.get(f"/admin/workspaces/workspace/{membership.workspace_id}/change/")
    assert response.status_code == 200
    assert b"memberships-TOTAL_FORMS" in response.content
