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


def test_lora_admin_filters_search_and_actions(admin_client, tmp_path):
    from loras.models import LoRA
    from tests.lora_files import write_lora

    membership = MembershipFactory(role="owner")
    path = write_lora(tmp_path / "a.safetensors")
    from tests.ingest import ingest_ready

    lora = ingest_ready(actor=membership, path=path)
    for query in (
        "?q=" + lora.sha256[:12],
        "?status__exact=ready&base_model__exact=wan-demo",
        "?deleted=yes",
        f"?workspace__id__exact={membership.workspace_id}",
    ):
        assert admin_client.get("/admin/loras/lora/" + query).status_code == 200
    change = admin_client.get(f"/admin/loras/lora/{lora.id}/change/").content.decode()
    assert lora.sha256 in change and 'name="sha256"' not in change  # read-only
    for action, check in [
        ("deactivate", lambda row: not row.is_active),
        ("soft_delete", lambda row: row.deleted_at),
        ("restore", lambda row: row.deleted_at is None),
    ]:
        response = admin_client.post("/admin/loras/lora/", {"action": action, "_selected_action": [lora.id]})
        assert response.status_code == 302
        assert check(LoRA.objects.get(id=lora.id)), action
