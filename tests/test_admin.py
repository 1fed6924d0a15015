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


def _job_with_a_lora(membership):
    from generation.models import GenerationJob, JobLoRA
    from tests.test_library_pages import make_lora

    lora = make_lora(membership.workspace, membership.user, name="Golden hour", file_size=int(151.5 * 1024**2))
    job = GenerationJob.objects.create(
        workspace=membership.workspace,
        created_by=membership.user,
        model_key="wan22-a14b-demo",
        model_name="Wan demo",
        kind="video",
        prompt="A lighthouse at dusk",
        params={"width": 64, "height": 64, "steps": 2},
        status="succeeded",
        timings={"model_load": 1.5, "inference": 3.25},
    )
    JobLoRA.objects.create(
        job=job,
        lora=lora,
        position=0,
        lora_ref=lora.id,
        name=lora.name,
        version="1",
        sha256=lora.sha256,
        file_key=lora.file.name,
        file_size=lora.file_size,
        weight=0.75,
        expert="high",
    )
    return job


def test_admin_generation_jobs_filters_search_and_read_only(admin_client):
    membership = MembershipFactory(role="owner")
    job = _job_with_a_lora(membership)
    assert admin_client.get("/admin/generation/").status_code == 200
    for query, found in [
        ("?q=lighthouse", True),
        (f"?q={job.id}", True),
        (f"?q={str(job.id)[:8]}", True),
        ("?q=nothing-like-it", False),
        ("?status__exact=succeeded", True),
        ("?status__exact=failed", False),
        ("?model_key=wan22-a14b-demo", True),
        (f"?workspace__id__exact={membership.workspace_id}", True),
        ("?created_at__gte=2000-01-01", True),
    ]:
        response = admin_client.get("/admin/generation/generationjob/" + query)
        assert response.status_code == 200, query
        assert (str(job.id)[:8] in response.content.decode()) is found, query
    change = admin_client.get(f"/admin/generation/generationjob/{job.id}/change/").content.decode()
    assert "A lighthouse at dusk" in change and 'name="prompt"' not in change  # read-only
    assert "Model load: 1.50 s" in change and "Inference: 3.25 s" in change
    assert "Golden hour" in change and "151.5 MiB" in change
    assert admin_client.get("/admin/generation/generationjob/add/").status_code == 403
    response = admin_client.post(f"/admin/generation/generationjob/{job.id}/delete/", {"post": "yes"})
    assert response.status_code == 403


def test_admin_sizes_in_words_and_labels(admin_client):
    from loras.models import LoRAUpload

    membership = MembershipFactory(role="owner")
    _job_with_a_lora(membership)
    LoRAUpload.objects.create(
        workspace=membership.workspace,
        created_by=membership.user,
        original_filename="big.safetensors",
        object_key="workspaces/1/loras/x/big.safetensors",
        storage_upload_id="u",
        size=3 * 1024**3,
        part_size=16 * 1024**2,
        expires_at="2099-01-01T00:00Z",
    )
    assert "151.5 MiB" in admin_client.get("/admin/loras/lora/").content.decode()
    assert "3 GiB" in admin_client.get("/admin/loras/loraupload/").content.decode()
    index = admin_client.get("/admin/").content.decode()
    assert "LoRA uploads" in index and "Lo ra" not in index
    lora_id = membership.workspace.loras.get().id
    change = admin_client.get(f"/admin/loras/lora/{lora_id}/change/").content.decode()
    assert "workspaces/{id}/loras/{uuid}/{sanitized name}" in change and "workspaces//loras//" not in change


def test_admin_lists_lora_pairs_read_only(admin_client):
    from loras.models import LoRAPair
    from tests.factories import LoRAFactory

    membership = MembershipFactory(role="owner")
    high = LoRAFactory(workspace=membership.workspace, name="Neon HIGH", expert="high")
    low = LoRAFactory(workspace=membership.workspace, name="Neon LOW", expert="low")
    pair = LoRAPair.objects.create(workspace=membership.workspace, name="Neon", high=high, low=low)
    listing = admin_client.get("/admin/loras/lorapair/?q=Neon")
    assert listing.status_code == 200 and b"Neon HIGH" in listing.content
    assert admin_client.get(f"/admin/loras/lorapair/{pair.id}/change/").status_code == 200
    assert admin_client.get("/admin/loras/lorapair/add/").status_code == 403
