"""Managing the library: list, search, filters, ordering, edit, versions, soft delete, download,
roles, server imports, beat cleanup — and 404 for everything in another workspace."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from loras import services
from loras.models import LoRA, LoRAUpload
from lorasite.object_store import get_object_store
from tests.factories import MembershipFactory, WorkspaceFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = pytest.mark.django_db


def ingest(workspace, user, tmp_path: Path, *, seed: int, filename: str = "", **options) -> LoRA:
    actor = workspace.memberships.get(user=user)
    family = options.pop("family", "wan-demo")
    path = write_lora(tmp_path / (filename or f"lora{seed}.safetensors"), seed=seed, family=family, blocks=1)
    return ingest_ready(actor=actor, path=path, options=services.LoRAOptions(**options))


@pytest.fixture
def library(workspace, owner, tmp_path):
    return [
        ingest(workspace, owner, tmp_path, seed=1, name="Anime", tags=("style", "anime")),
        ingest(
            workspace, owner, tmp_path, seed=2, name="Portrait", tags=("people",), expert="high", family="flux-demo"
        ),
        ingest(workspace, owner, tmp_path, seed=3, name="Zebra stripes", description="Animals", expert="low"),
    ]


def url(workspace, suffix: str = "") -> str:
    return f"/api/v1/workspaces/{workspace.slug}/loras/{suffix}"


class TestList:
    def test_search_filters_and_ordering(self, client_for, owner, workspace, library):
        api = client_for(owner)

        def names(**params):
            response = api.get(url(workspace), params)
            assert response.status_code == 200, response.json()
            return [item["name"] for item in response.json()["results"]]

        assert names(ordering="name") == ["Anime", "Portrait", "Zebra stripes"]
        assert names(ordering="-name") == ["Zebra stripes", "Portrait", "Anime"]
        assert names(search="anim") == ["Zebra stripes", "Anime"]  # description and tag match, newest first
        assert names(search="lora2") == ["Portrait"]  # original filename
        assert names(tag="people") == ["Portrait"]
        assert names(base_model="flux-demo") == ["Portrait"]
        assert names(expert="low") == ["Zebra stripes"]
        assert names(status="ready", ordering="created") == ["Anime", "Portrait", "Zebra stripes"]
        library[0].is_active = False
        library[0].save()
        assert names(active="false") == ["Anime"]
        assert api.get(url(workspace), {"ordering": "bogus"}).status_code == 400

    def test_fixed_number_of_queries_whatever_the_page_size(self, client_for, owner, workspace, tmp_path):
        for seed in range(12):
            ingest(workspace, owner, tmp_path, seed=100 + seed)
        api = client_for(owner)
        counts = []
        for size in (2, 12):
            with CaptureQueriesContext(connection) as queries:
                assert len(api.get(url(workspace), {"page_size": size}).json()["results"]) == size
            counts.append(len(queries))
        assert counts[0] == counts[1]

    def test_detail_shows_metadata(self, client_for, owner, workspace, library):
        body = client_for(owner).get(url(workspace, f"{library[0].id}/")).json()
        assert body["sha256"] == library[0].sha256 and body["base_model_display"] == "Wan demo (tiny)"
        assert body["rank"] == 4 and body["tensor_count"] > 0 and body["dtype"] == "F16"


class TestEdit:
    def test_rename_and_fields(self, client_for, owner, workspace, library):
        api = client_for(owner)
        response = api.patch(
            url(workspace, f"{library[0].id}/"),
            {
                "name": "Anime v2 style",
                "tags": ["a", "b", "A"],
                "trigger_words": ["ohwx"],
                "preferred_weight": 0.7,
                "expert": "high",
                "is_active": False,
            },
            format="json",
        )
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["name"] == "Anime v2 style" and body["tags"] == ["a", "b"] and body["preferred_weight"] == 0.7
        assert body["trigger_words"] == ["ohwx"] and body["expert"] == "high" and body["is_active"] is False

    @pytest.mark.parametrize(
        "body,field",
        [
            ({"name": ""}, "name"),
            ({"name": "x" * 101}, "name"),
            ({"preferred_weight": 2.5}, "preferred_weight"),
            ({"preferred_weight": -0.1}, "preferred_weight"),
            ({"expert": "middle"}, "expert"),
            ({"tags": "notalist"}, "tags"),
        ],
    )
    def test_bad_edits_name_the_field(self, client_for, owner, workspace, library, body, field):
        response = client_for(owner).patch(url(workspace, f"{library[0].id}/"), body, format="json")
        assert response.status_code == 400
        assert field in response.json()["errors"]
        library[0].refresh_from_db()
        assert library[0].name == "Anime"

    def test_rename_onto_an_existing_name_and_version_conflicts(self, client_for, owner, workspace, library):
        response = client_for(owner).patch(url(workspace, f"{library[0].id}/"), {"name": "Portrait"}, format="json")
        assert response.status_code == 409


class TestRoles:
    def test_viewer_reads_but_cannot_upload_or_edit(self, client_for, member_of, workspace, library, tmp_path):
        api = client_for(member_of(Role.VIEWER))
        assert api.get(url(workspace)).status_code == 200
        assert api.get(url(workspace, f"{library[0].id}/download/")).status_code == 200
        path = write_lora(tmp_path / "v.safetensors", seed=9)
        with open(path, "rb") as handle:
            assert api.post(url(workspace), {"file": handle}, format="multipart").status_code == 403
        assert (
            api.post(url(workspace, "uploads/"), {"filename": "a.safetensors", "size": 10}, format="json").status_code
            == 403
        )
        assert api.patch(url(workspace, f"{library[0].id}/"), {"name": "x"}, format="json").status_code == 403
        assert api.delete(url(workspace, f"{library[0].id}/")).status_code == 403
        assert LoRA.objects.count() == 3

    def test_member_edits_own_but_not_others(self, client_for, member_of, workspace, library, tmp_path):
        member = member_of(Role.MEMBER)
        api = client_for(member)
        own = ingest(workspace, member, tmp_path, seed=50, name="Mine")
        assert api.patch(url(workspace, f"{own.id}/"), {"name": "Still mine"}, format="json").status_code == 200
        assert api.patch(url(workspace, f"{library[0].id}/"), {"name": "Hijack"}, format="json").status_code == 403
        assert api.delete(url(workspace, f"{library[0].id}/")).status_code == 403
        assert api.delete(url(workspace, f"{own.id}/")).status_code == 204

    def test_admin_edits_everything(self, client_for, member_of, workspace, library):
        api = client_for(member_of(Role.ADMIN))
        assert (
            api.patch(url(workspace, f"{library[0].id}/"), {"description": "curated"}, format="json").status_code == 200
        )


class TestDelete:
    def test_soft_delete_hides_and_second_delete_is_404(self, client_for, owner, workspace, library):
        api = client_for(owner)
        assert api.delete(url(workspace, f"{library[0].id}/")).status_code == 204
        assert api.delete(url(workspace, f"{library[0].id}/")).status_code == 404
        assert api.get(url(workspace, f"{library[0].id}/")).status_code == 404
        assert library[0].id not in [item["id"] for item in api.get(url(workspace)).json()["results"]]
        assert get_object_store().exists(library[0].file.name)  # kept until the purge

    def test_purge_after_retention_removes_the_object(self, owner, workspace, library):
        LoRA.objects.filter(id=library[0].id).update(
            deleted_at=timezone.now() - timedelta(days=settings.LORASITE_PURGE_AFTER_DAYS + 1)
        )
        LoRA.objects.filter(id=library[1].id).update(deleted_at=timezone.now())
        assert services.lora_purge_deleted() == 1
        assert not get_object_store().exists(library[0].file.name)
        assert get_object_store().exists(library[1].file.name)
        purged = LoRA.objects.get(id=library[0].id)
        assert purged.purged_at and purged.file.name == ""

    def test_deleted_name_is_free_again(self, client_for, owner, workspace, library, tmp_path):
        client_for(owner).delete(url(workspace, f"{library[0].id}/"))
        again = ingest(workspace, owner, tmp_path, seed=77, name="Anime")
        assert again.version == "1"


def test_cleanup_aborts_expired_uploads_and_orphans(owner, workspace, s3_server, s3_keys):
    actor = workspace.memberships.get(user=owner)
    upload = services.lora_upload_start(actor=actor, filename="a.safetensors", size=100)
    LoRAUpload.objects.filter(id=upload.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    orphan = f"workspaces/{workspace.id}/loras/deadbeef/orphan.safetensors"
    s3_server.put_object(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=orphan, Body=b"x")
    young = services.lora_storage_cleanup()
    assert young["uploads_aborted"] == 1 and young["orphans_deleted"] == 0  # the orphan is within its grace period
    assert orphan in s3_keys()
    report = services.lora_storage_cleanup(
        now=timezone.now() + timedelta(seconds=settings.LORASITE_ORPHAN_GRACE_SECONDS + 60)
    )
    assert report["orphans_deleted"] >= 1  # earlier tests rolled back their rows but not the bucket
    assert orphan not in s3_keys()
    assert s3_server.list_multipart_uploads(Bucket=settings.AWS_STORAGE_BUCKET_NAME).get("Uploads", []) == []


class TestImport:
    @pytest.fixture
    def import_dir(self, tmp_path, workspace):
        """The workspace's import folder, <import dir>/<slug>/; requests name files relative to it."""
        directory = tmp_path / "imports"
        (directory / workspace.slug).mkdir(parents=True)
        with override_settings(LORASITE_IMPORT_DIRS=[str(directory)]):
            yield directory / workspace.slug

    def test_import_copies_and_leaves_the_original(self, client_for, owner, workspace, import_dir):
        path = write_lora(
            import_dir / "musubi_style_high_noise.safetensors",
            family="wan-14b",
            key_format="comfyui",
            alpha=16.0,
            rank=16,
            blocks=1,
        )
        before = path.read_bytes()
        response = client_for(owner).post(url(workspace, "import/"), {"file_path": path.name}, format="json")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["expert"] == "high" and body["alpha"] == 16.0 and body["key_format"] == "comfyui"
        assert path.read_bytes() == before

    def test_escapes_are_refused(self, client_for, owner, workspace, import_dir, tmp_path):
        outside = write_lora(tmp_path / "outside.safetensors", seed=5)
        (import_dir / "link.safetensors").symlink_to(outside)
        api = client_for(owner)
        for candidate in (str(outside), "../../outside.safetensors", "link.safetensors"):
            response = api.post(url(workspace, "import/"), {"file_path": candidate}, format="json")
            assert response.status_code == 400 and "file_path" in response.json()["errors"], candidate
        missing = api.post(url(workspace, "import/"), {"file_path": "nope.safetensors"}, format="json")
        assert missing.status_code == 400
        assert not LoRA.objects.exists()

    def test_members_cannot_import(self, client_for, member_of, workspace, import_dir):
        path = write_lora(import_dir / "a.safetensors")
        response = client_for(member_of(Role.MEMBER)).post(
            url(workspace, "import/"), {"file_path": path.name}, format="json"
        )
        assert response.status_code == 403

    def test_disabled_without_import_dirs(self, client_for, owner, workspace, tmp_path):
        with override_settings(LORASITE_IMPORT_DIRS=[]):
            response = client_for(owner).post(url(workspace, "import/"), {"file_path": "/etc/passwd"}, format="json")
        assert response.status_code == 400 and "disabled" in response.json()["message"]

    def test_management_command(self, owner, workspace, tmp_path, capsys):
        good = write_lora(tmp_path / "good.safetensors", seed=11)
        call_command("import_lora", "--workspace", workspace.slug, str(good))
        assert "imported as" in capsys.readouterr().out
        with pytest.raises(CommandError, match="1 of 1"):
            call_command("import_lora", "--workspace", workspace.slug, str(good))  # duplicate
        with pytest.raises(CommandError, match="No workspace"):
            call_command("import_lora", "--workspace", "nope", str(good))
        assert LoRA.objects.count() == 1


def test_every_endpoint_of_another_workspace_is_404(client_for, owner, workspace, library, tmp_path):
    other = WorkspaceFactory()
    stranger = MembershipFactory(workspace=other, role=Role.OWNER).user
    api = client_for(stranger)
    lora_id = library[0].id
    upload = services.lora_upload_start(actor=workspace.memberships.get(user=owner), filename="a.safetensors", size=10)
    for method, path, body in [
        ("get", url(workspace), None),
        ("post", url(workspace, "uploads/"), {"filename": "a.safetensors", "size": 10}),
        ("get", url(workspace, f"uploads/{upload.id}/"), None),
        ("post", url(workspace, f"uploads/{upload.id}/complete/"), {"parts": [{"part_number": 1, "etag": "x"}]}),
        ("delete", url(workspace, f"uploads/{upload.id}/"), None),
        ("post", url(workspace, "import/"), {"file_path": "/x"}),
        ("get", url(workspace, "versions/") + "?name=Anime", None),
        ("get", url(workspace, f"{lora_id}/"), None),
        ("patch", url(workspace, f"{lora_id}/"), {"name": "x"}),
        ("delete", url(workspace, f"{lora_id}/"), None),
        ("get", url(workspace, f"{lora_id}/download/"), None),
        # The stranger's own workspace URL with our object ids: still 404.
        ("get", url(other, f"{lora_id}/"), None),
        ("get", url(other, f"uploads/{upload.id}/"), None),
        ("get", url(other, f"{lora_id}/download/"), None),
    ]:
        response = getattr(api, method)(path, body, format="json")
        assert response.status_code == 404, (method, path, response.status_code)
    assert LoRA.objects.get(id=lora_id).name == "Anime"
    assert LoRAUpload.objects.filter(id=upload.id).exists()
