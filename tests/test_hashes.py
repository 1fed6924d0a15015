"""LoRA hashes: sha256, AutoV2, AutoV3 (tensor data after the header) and BLAKE3 from one read, on every way in;
search and filter by any of them; the same weights under other metadata reported; metadata's own hashes ignored;
`manage.py lora_rehash` for rows from before."""

import hashlib
import struct
from pathlib import Path

import blake3
import pytest
import requests
from django.core.management import call_command
from django.test import TestCase, override_settings

from loras import services
from loras.hashes import FileHasher, HashingReader, hashes_of_chunks
from loras.models import LoRA, Status
from tests.factories import MembershipFactory, WorkspaceFactory
from tests.ingest import ingest_ready
from tests.lora_files import random_tensor, write_tensors
from workspaces.models import Role

pytestmark = pytest.mark.django_db

BLAKE3_OF_NOTHING = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"  # the BLAKE3 spec's vector


def small_lora(path: Path, *, metadata: dict[str, str] | None = None, seed: int = 0) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    tensors = {
        "transformer.blocks.0.attn1.to_q.lora_A.weight": random_tensor(rng, "F16", (4, 32)),
        "transformer.blocks.0.attn1.to_q.lora_B.weight": random_tensor(rng, "F16", (32, 4)),
    }
    return write_tensors(path, tensors, metadata={"format": "pt", **(metadata or {})})


def by_hand(path: Path) -> dict[str, str]:
    """Every hash computed the plain way, from the whole file in memory."""
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    sha256 = hashlib.sha256(data).hexdigest()
    return {
        "sha256": sha256,
        "autov2": sha256[:10],
        "autov3": hashlib.sha256(data[8 + header_length :]).hexdigest(),
        "blake3": blake3.blake3(data).hexdigest(),
    }


def stored_hashes(lora: LoRA) -> dict[str, str]:
    return {field: getattr(lora, field) for field in ("sha256", "autov2", "autov3", "blake3")}


class TestKnownVectors:
    def test_autov3_is_the_sha256_of_the_bytes_after_the_header(self, tmp_path):
        path = small_lora(tmp_path / "a.safetensors")
        data = path.read_bytes()
        header_length = int.from_bytes(data[:8], "little")
        assert data[8 + header_length : 8 + header_length + 1] != b"{"  # the tensor data, not the JSON header
        expected = by_hand(path)
        assert expected["autov3"] != expected["sha256"]
        # Whatever the chunking (a chunk ending inside the length prefix, inside the header, across its end).
        for size in (1, 3, 7, 8, 9, header_length + 7, header_length + 8, header_length + 9, len(data)):
            chunks = [data[i : i + size] for i in range(0, len(data), size)]
            assert hashes_of_chunks(chunks).as_fields() == expected, size

    def test_blake3_vector_and_a_file_shorter_than_its_header(self):
        hasher = FileHasher()
        assert hasher.result().blake3 == BLAKE3_OF_NOTHING
        hasher.update(struct.pack("<Q", 1000) + b"{}")  # declares more header than there is: no tensor data
        assert hasher.result().autov3 == hashlib.sha256(b"").hexdigest()

    def test_a_metadata_edit_keeps_autov3_and_changes_sha256_autov2_and_blake3(self, tmp_path):
        original = by_hand(small_lora(tmp_path / "a.safetensors"))
        edited = by_hand(small_lora(tmp_path / "b.safetensors", metadata={"ss_output_name": "renamed"}))
        assert edited["autov3"] == original["autov3"]
        for field in ("sha256", "autov2", "blake3"):
            assert edited[field] != original[field]
        other_weights = by_hand(small_lora(tmp_path / "c.safetensors", seed=1))
        assert other_weights["autov3"] != original["autov3"]

    def test_the_reader_hashes_exactly_what_passes_through_it(self, tmp_path):
        path = small_lora(tmp_path / "a.safetensors")
        with open(path, "rb") as handle:
            reader = HashingReader(handle)
            copied = b"".join(iter(lambda: reader.read(5), b""))
        assert copied == path.read_bytes()
        assert reader.hasher.result().as_fields() == by_hand(path)


def url(workspace, suffix: str = "") -> str:
    return f"/api/v1/workspaces/{workspace.slug}/loras/{suffix}"


def finish(lora_id: int) -> LoRA:
    with TestCase.captureOnCommitCallbacks(execute=True):
        return services.lora_finish_ingest(lora_id=lora_id)


class TestEveryWayInStoresAllFour:
    def test_through_the_app(self, api, workspace, tmp_path):
        path = small_lora(tmp_path / "app.safetensors")
        with open(path, "rb") as handle:
            response = api.post(url(workspace), {"file": handle}, format="multipart")
        assert response.status_code == 201, response.json()
        body = response.json()
        # Hashed while it was stored, in the request: the answer already has them.
        assert {field: body[field] for field in ("sha256", "autov2", "autov3", "blake3")} == by_hand(path)
        assert stored_hashes(finish(body["id"])) == by_hand(path)

    @override_settings(LORASITE_UPLOAD_PART_BYTES=5 * 1024 * 1024)
    def test_multipart_hashed_by_the_ingest_task(self, api, workspace, tmp_path):
        path = small_lora(tmp_path / "multi.safetensors")
        started = api.post(
            url(workspace, "uploads/"), {"filename": path.name, "size": path.stat().st_size}, format="json"
        ).json()
        (part,) = started["parts"]
        put = requests.put(part["url"], data=path.read_bytes(), timeout=30)
        assert put.status_code == 200, put.text
        response = api.post(
            url(workspace, f"uploads/{started['upload_id']}/complete/"),
            {"parts": [{"part_number": 1, "etag": put.headers["ETag"]}]},
            format="json",
        )
        assert response.status_code == 201, response.json()
        assert response.json()["autov3"] == ""  # the bytes never passed through the web process
        lora = finish(response.json()["id"])
        assert lora.status == Status.READY and stored_hashes(lora) == by_hand(path)

    def test_server_import(self, api, workspace, tmp_path):
        folder = tmp_path / "imports" / workspace.slug
        folder.mkdir(parents=True)
        path = small_lora(folder / "imported.safetensors")
        with override_settings(LORASITE_IMPORT_DIRS=[str(tmp_path / "imports")]):
            response = api.post(url(workspace, "import/"), {"file_path": "imported.safetensors"}, format="json")
        assert response.status_code == 201, response.json()
        assert stored_hashes(finish(response.json()["id"])) == by_hand(path)

    def test_hashes_written_in_the_metadata_are_never_taken(self, owner, workspace, tmp_path):
        claims = {"sshs_model_hash": "0" * 64, "sshs_legacy_hash": "deadbeef", "modelspec.hash_sha256": "0x" + "1" * 64}
        path = small_lora(tmp_path / "claims.safetensors", metadata=claims)
        lora = ingest_ready(actor=owner.memberships.get(workspace=workspace), path=path)
        assert stored_hashes(lora) == by_hand(path)
        assert "0" * 64 not in stored_hashes(lora).values()


@pytest.fixture
def hashed(owner, workspace, tmp_path):
    actor = owner.memberships.get(workspace=workspace)
    return [
        ingest_ready(actor=actor, path=small_lora(tmp_path / f"lora{seed}.safetensors", seed=seed)) for seed in (1, 2)
    ]


class TestSearchByHash:
    def names(self, api, workspace, **params):
        response = api.get(url(workspace), params)
        assert response.status_code == 200, response.json()
        return [item["name"] for item in response.json()["results"]]

    @pytest.mark.parametrize("field", ["sha256", "autov2", "autov3", "blake3"])
    def test_filter_by_each_hash_prefix(self, api, workspace, hashed, field):
        first = hashed[0]
        value = getattr(first, field)
        assert self.names(api, workspace, hash=value) == [first.name]
        assert self.names(api, workspace, hash=value[:8].upper()) == [first.name]  # a prefix, any case
        assert self.names(api, workspace, search=value[:10]) == [first.name]  # the search box knows hashes too

    @pytest.mark.parametrize("value", ["abc1234", "xyz12345", "a" * 65])
    def test_a_bad_hash_is_a_400_naming_the_filter(self, api, workspace, hashed, value):
        response = api.get(url(workspace), {"hash": value})
        assert response.status_code == 400
        assert "hash" in response.json()["errors"]

    def test_another_workspaces_lora_is_not_found_by_its_hash(self, client_for, workspace, hashed):
        other = WorkspaceFactory()
        stranger = MembershipFactory(workspace=other, role=Role.OWNER).user
        response = client_for(stranger).get(url(other), {"hash": hashed[0].autov2})
        assert response.status_code == 200 and response.json()["results"] == []

    def test_the_library_page_search_finds_an_autov2(self, client, owner, workspace, hashed):
        client.force_login(owner)
        page = client.get(f"/w/{workspace.slug}/loras/", {"search": hashed[1].autov2}).content.decode()
        assert hashed[1].name in page and hashed[0].name not in page


class TestSameWeightsOtherMetadata:
    def test_upload_answers_201_with_the_warning_and_the_page_shows_it(self, api, client, owner, workspace, tmp_path):
        first = ingest_ready(
            actor=owner.memberships.get(workspace=workspace), path=small_lora(tmp_path / "original.safetensors")
        )
        edited = small_lora(tmp_path / "retagged.safetensors", metadata={"ss_tag_frequency": '{"a": {"b": 1}}'})
        with open(edited, "rb") as handle:
            response = api.post(url(workspace), {"file": handle}, format="multipart")
        assert response.status_code == 201, response.json()  # not a duplicate: the metadata may matter
        assert response.json()["same_weights_as"] == [{"id": first.id, "name": first.name, "version": first.version}]
        second = finish(response.json()["id"])
        assert second.status == Status.READY
        assert api.get(url(workspace, f"{first.id}/")).json()["same_weights_as"][0]["id"] == second.id

        client.force_login(owner)
        page = client.get(f"/w/{workspace.slug}/loras/{second.id}/").content.decode()
        assert "Same weights, other metadata" in page and f"/loras/{first.id}/" in page
        for value in stored_hashes(second).values():
            assert value in page

    def test_the_same_file_again_is_still_a_409(self, api, owner, workspace, tmp_path):
        path = small_lora(tmp_path / "same.safetensors")
        ingest_ready(actor=owner.memberships.get(workspace=workspace), path=path)
        with open(path, "rb") as handle:
            response = api.post(url(workspace), {"file": handle}, format="multipart")
        assert response.status_code == 409


class TestRehash:
    def test_fills_missing_hashes_and_reports_a_changed_file(self, owner, workspace, tmp_path, capsys):
        actor = owner.memberships.get(workspace=workspace)
        loras = [
            ingest_ready(actor=actor, path=small_lora(tmp_path / f"old{seed}.safetensors", seed=seed))
            for seed in (1, 2)
        ]
        expected = [stored_hashes(lora) for lora in loras]
        LoRA.objects.update(autov2="", autov3="", blake3="")  # rows from before the hashes existed
        call_command("lora_rehash")
        assert [stored_hashes(lora) for lora in LoRA.objects.order_by("id")] == expected
        assert "2 LoRAs hashed" in capsys.readouterr().out

        LoRA.objects.filter(id=loras[0].id).update(sha256="f" * 64, autov3="")
        call_command("lora_rehash", "--workspace", workspace.slug)
        report = capsys.readouterr()
        assert "sha256 differs" in report.err
        assert LoRA.objects.get(id=loras[0].id).sha256 == "f" * 64  # a mismatch is reported, never overwritten


def test_the_admin_searches_by_any_hash_and_shows_them_read_only(admin_client, hashed):
    lora = hashed[0]
    for value in (lora.autov2, lora.autov3[:16], lora.blake3[:16]):
        listing = admin_client.get("/admin/loras/lora/", {"q": value}).content.decode()
        assert f"/admin/loras/lora/{lora.id}/change/" in listing
        assert f"/admin/loras/lora/{hashed[1].id}/change/" not in listing
    change = admin_client.get(f"/admin/loras/lora/{lora.id}/change/").content.decode()
    assert lora.autov3 in change and lora.blake3 in change and 'name="autov3"' not in change


def test_the_page_shows_what_the_metadata_claims_next_to_the_computed_hash(client, owner, workspace, tmp_path):
    actor = owner.memberships.get(workspace=workspace)
    autov3 = by_hand(small_lora(tmp_path / "plain.safetensors"))["autov3"]
    honest = ingest_ready(
        actor=actor, path=small_lora(tmp_path / "honest.safetensors", metadata={"sshs_model_hash": autov3})
    )
    edited = ingest_ready(
        actor=actor, path=small_lora(tmp_path / "edited.safetensors", seed=3, metadata={"sshs_model_hash": autov3})
    )
    client.force_login(owner)
    honest_page = client.get(f"/w/{workspace.slug}/loras/{honest.id}/").content.decode()
    assert "Equals the AutoV3" in honest_page
    edited_page = client.get(f"/w/{workspace.slug}/loras/{edited.id}/").content.decode()
    assert "Differs from the AutoV3" in edited_page and edited.autov3 != autov3
