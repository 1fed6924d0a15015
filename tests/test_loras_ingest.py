"""The three ways in (through the app, direct-to-storage multipart, server import), against the
real S3 API over HTTP; every rejection leaves no row, no object and no open multipart upload."""

import hashlib
import os
import pickle
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.conf import settings
from django.test import override_settings

from loras.models import LoRA, LoRAUpload, Status
from lorasite.celery import app as celery_app
from tests.lora_files import write_full_checkpoint, write_lora, write_raw, write_sparse_lora

pytestmark = pytest.mark.django_db(transaction=False)


@pytest.fixture
def eager_tasks(django_capture_on_commit_callbacks):
    """eager_tasks() → a context in which tasks enqueued with delay_on_commit run inline when the
    (test-wrapped) transaction would commit, i.e. on leaving the context."""
    celery_app.conf.task_always_eager = True
    yield lambda: django_capture_on_commit_callbacks(execute=True)
    celery_app.conf.task_always_eager = False


@pytest.fixture
def nothing_left(s3_server, s3_keys, workspace):
    """Call it after a rejection: no row, no object, no open multipart upload, no upload row."""

    def check():
        assert not LoRA.objects.filter(workspace=workspace).exists()
        assert not LoRAUpload.objects.exists()
        assert s3_keys(f"workspaces/{workspace.id}/") == []
        prefix = f"workspaces/{workspace.id}/"
        assert (
            s3_server.list_multipart_uploads(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Prefix=prefix).get("Uploads", [])
            == []
        )

    return check


def upload(api, workspace, path: Path, **fields):
    with open(path, "rb") as handle:
        return api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle, **fields}, format="multipart")


class TestThroughTheApp:
    def test_upload_detects_and_stores_under_workspace_prefix(self, api, workspace, tmp_path, s3_keys, eager_tasks):
        path = write_lora(
            tmp_path / "wan22_anime_HIGH_noise.safetensors",
            family="wan-14b",
            key_format="kohya",
            rank=8,
            alpha=4.0,
            kohya_metadata=True,
            blocks=1,
        )
        with eager_tasks():
            response = upload(api, workspace, path, name="Anime style", tags="anime, style")
        assert response.status_code == 201, response.json()
        # The header checks answered in the request; the ingest task computes the coverage.
        assert response.json()["status"] == "processing" and response.json()["coverage"] is None
        body = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/{response.json()['id']}/").json()
        assert body["status"] == "ready" and body["base_model"] == "wan-14b" and body["expert"] == "high"
        assert body["coverage"]["text"] == "30 of 30 tensors map to transformer layers"
        assert body["rank"] == 8 and body["alpha"] == 4.0 and body["key_format"] == "kohya"
        assert body["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (
            body["tags"] == ["anime", "style"]
            and body["version"] == "1"
            and body["adapter_name"] == f"lora_{body['id']}"
        )
        assert body["trigger_words"] and body["training_metadata"]
        [key] = s3_keys(f"workspaces/{workspace.id}/loras/")
        assert key.endswith("/wan22_anime_HIGH_noise.safetensors")
        assert LoRA.objects.get().file.name == key

    def test_upload_spooled_to_a_temporary_file(self, api, workspace, tmp_path):
        # Over FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) Django spools the body to disk: the real path for big files.
        path = write_sparse_lora(tmp_path / "spooled.safetensors", 3 * 1024 * 1024)
        response = upload(api, workspace, path)
        assert response.status_code == 201, response.json()
        assert response.json()["file_size"] == 3 * 1024 * 1024 and response.json()["base_model"] == "wan-14b"

    def test_same_content_is_409_with_existing_id_and_stored_once(self, api, workspace, tmp_path, s3_keys):
        path = write_lora(tmp_path / "a.safetensors")
        first = upload(api, workspace, path).json()
        copy = tmp_path / "renamed.safetensors"
        copy.write_bytes(path.read_bytes())
        response = upload(api, workspace, copy, name="Other name")
        assert response.status_code == 409
        assert response.json()["existing_lora_id"] == first["id"]
        assert len(s3_keys(f"workspaces/{workspace.id}/")) == 1

    def test_same_name_becomes_next_version_or_suffixed_name(self, api, workspace, tmp_path):
        v1 = upload(api, workspace, write_lora(tmp_path / "x.safetensors", seed=1), name="Style").json()
        v2 = upload(api, workspace, write_lora(tmp_path / "y.safetensors", seed=2), name="Style").json()
        clash = upload(api, workspace, write_lora(tmp_path / "z.safetensors", seed=3), name="Style", version="1").json()
        assert (v1["name"], v1["version"]) == ("Style", "1")
        assert (v2["name"], v2["version"]) == ("Style", "2")
        assert (clash["name"], clash["version"]) == ("Style (2)", "1")
        versions = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/versions/", {"name": "Style"}).json()["results"]
        assert [v["version"] for v in versions] == ["1", "2"]

    def test_declared_content_length_over_limit_is_413_before_reading(self, api, workspace, nothing_left):
        with override_settings(LORASITE_MAX_LORA_BYTES=1000):
            response = api.post(
                f"/api/v1/workspaces/{workspace.slug}/loras/",
                data=b"x" * 10,
                content_type="multipart/form-data; boundary=x",
                CONTENT_LENGTH=str(5 * 1024 * 1024),
            )
        assert response.status_code == 413
        assert "1000 bytes" in response.json()["message"]
        nothing_left()


BAD_FILES = {
    "pickle": ("model.ckpt", lambda p: p.write_bytes(b"\x80\x04N."), 400, "pickle"),
    "pt": ("model.pt", lambda p: p.write_bytes(b"\x80\x04N."), 400, "Convert it"),
    "wrong extension": ("notes.txt", lambda p: p.write_text("hello"), 400, "not a .safetensors"),
    "empty": ("empty.safetensors", lambda p: p.write_bytes(b""), 422, "empty"),
    "full checkpoint": ("model.safetensors", lambda p: write_full_checkpoint(p), 422, "not a LoRA"),
    "bad length": ("bad.safetensors", lambda p: write_raw(p, b"{}", length_prefix=10**12), 422, "header"),
    "bad json": ("bad.safetensors", lambda p: write_raw(p, b"{not json}     "), 422, "JSON"),
    "overlap": (
        "bad.safetensors",
        lambda p: write_raw(
            p,
            {
                "a.lora_A.weight": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
                "a.lora_B.weight": {"dtype": "F16", "shape": [2, 2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
        ),
        422,
        "overlap",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_through_the_app_leave_nothing(case, api, workspace, tmp_path, nothing_left):
    filename, make, status, needle = BAD_FILES[case]
    path = tmp_path / filename
    make(path)
    response = upload(api, workspace, path)
    assert response.status_code == status, response.json()
    assert needle.lower() in response.json()["message"].lower()
    nothing_left()


def test_pickle_payload_is_never_unpickled(api, workspace, tmp_path, nothing_left):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Exploit())
    for name in ("evil.pt", "evil.bin", "evil.safetensors"):
        (tmp_path / name).write_bytes(payload)
        response = upload(api, workspace, tmp_path / name)
        assert response.status_code in (400, 422)
    assert not marker.exists()
    nothing_left()


class TestDirectMultipart:
    def start(self, api, workspace, path: Path, **extra):
        body = {"filename": path.name, "size": path.stat().st_size, **extra}
        return api.post(f"/api/v1/workspaces/{workspace.slug}/loras/uploads/", body, format="json")

    def put_parts(self, started: dict, path: Path) -> list[dict]:
        data = path.read_bytes()
        parts = []
        for part in started["parts"]:
            offset = (part["part_number"] - 1) * started["part_size"]
            response = requests.put(part["url"], data=data[offset : offset + started["part_size"]], timeout=30)
            assert response.status_code == 200, response.text
            parts.append({"part_number": part["part_number"], "etag": response.headers["ETag"]})
        return parts

    @override_settings(LORASITE_UPLOAD_PART_BYTES=5 * 1024 * 1024)
    def test_presigned_round_trip_then_presigned_download(self, api, workspace, tmp_path, eager_tasks):
        path = write_lora(tmp_path / "big_LowNoise.safetensors", family="wan-14b", rank=64, blocks=2, dtype="bfloat16")
        assert path.stat().st_size > 5 * 1024 * 1024  # more than one part
        started = self.start(api, workspace, path, name="Big").json()
        assert len(started["parts"]) >= 2
        assert all(urlparse(p["url"]).port == settings.MOTO_PORT for p in started["parts"])  # straight to storage
        parts = self.put_parts(started, path)
        with eager_tasks():
            response = api.post(
                f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{started['upload_id']}/complete/",
                {"parts": parts},
                format="json",
            )
        assert response.status_code == 201, response.json()
        assert response.json()["status"] == "processing"
        lora = LoRA.objects.get()
        assert lora.status == Status.READY and lora.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert lora.expert == "low" and lora.base_model == "wan-14b" and lora.dtype == "BF16"
        assert not LoRAUpload.objects.exists()

        link = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/{lora.id}/download/").json()
        query = parse_qs(urlparse(link["url"]).query)
        assert int(query["X-Amz-Expires"][0]) <= 3600
        assert link["expires_at"]
        downloaded = requests.get(link["url"], timeout=30)
        assert downloaded.status_code == 200 and downloaded.content == path.read_bytes()

    def test_declared_size_over_limit_is_413_before_any_byte(self, api, workspace, nothing_left):
        response = api.post(
            f"/api/v1/workspaces/{workspace.slug}/loras/uploads/",
            {"filename": "x.safetensors", "size": 6 * 1024**3},
            format="json",
        )
        assert response.status_code == 413
        assert "5 GiB" in response.json()["message"]
        nothing_left()

    @pytest.mark.parametrize(
        "body,field",
        [
            ({"filename": "x.ckpt", "size": 10}, "file"),
            ({"filename": "x.safetensors", "size": 0}, "file"),
            ({"size": 5}, "filename"),
        ],
    )
    def test_bad_declarations(self, api, workspace, nothing_left, body, field):
        response = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/uploads/", body, format="json")
        assert response.status_code in (400, 422)
        assert field in response.json()["errors"]
        nothing_left()

    def test_not_a_lora_after_upload_leaves_nothing(self, api, workspace, tmp_path, nothing_left):
        path = write_full_checkpoint(tmp_path / "model.safetensors")
        started = self.start(api, workspace, path).json()
        parts = self.put_parts(started, path)
        response = api.post(
            f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{started['upload_id']}/complete/",
            {"parts": parts},
            format="json",
        )
        assert response.status_code == 422 and "not a LoRA" in response.json()["message"]
        nothing_left()

    def test_missing_parts_and_bad_etag(self, api, workspace, tmp_path, nothing_left):
        path = write_lora(tmp_path / "a.safetensors")
        started = self.start(api, workspace, path).json()
        url = f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{started['upload_id']}/complete/"
        assert api.post(url, {"parts": [{"part_number": 2, "etag": "x"}]}, format="json").status_code == 400
        assert LoRAUpload.objects.exists()  # a wrong part list keeps the upload open for a retry
        self.put_parts(started, path)
        response = api.post(url, {"parts": [{"part_number": 1, "etag": '"0000"'}]}, format="json")
        assert response.status_code == 400
        nothing_left()

    def test_abort_leaves_nothing(self, api, workspace, tmp_path, nothing_left):
        path = write_lora(tmp_path / "a.safetensors")
        started = self.start(api, workspace, path).json()
        self.put_parts(started, path)
        assert (
            api.delete(f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{started['upload_id']}/").status_code == 204
        )
        assert (
            api.delete(f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{started['upload_id']}/").status_code == 404
        )
        nothing_left()

    def test_duplicate_found_by_ingest_leaves_no_row_listed_and_drops_copy(
        self, api, workspace, tmp_path, eager_tasks, s3_keys
    ):
        path = write_lora(tmp_path / "a.safetensors")
        first = upload(api, workspace, path).json()
        started = self.start(api, workspace, path).json()
        parts = self.put_parts(started, path)
        with eager_tasks():
            response = api.post(
                f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{started['upload_id']}/complete/",
                {"parts": parts},
                format="json",
            )
        second = LoRA.objects.get(id=response.json()["id"])
        assert second.status == Status.FAILED and f"id {first['id']}" in second.error
        assert len(s3_keys(f"workspaces/{workspace.id}/")) == 1
        # Not listed, its version free again; polling it answers the 409 of a duplicate, naming the original.
        assert second.deleted_at is not None
        listed = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/").json()["results"]
        assert [item["id"] for item in listed] == [first["id"]]
        polled = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/{second.id}/")
        assert polled.status_code == 409 and polled.json()["existing_lora_id"] == first["id"]
        assert "already in the workspace" in polled.json()["message"]
        third = upload(api, workspace, write_lora(tmp_path / "b.safetensors", seed=7), name=first["name"]).json()
        assert third["version"] == "2"  # the duplicate did not take version 2


def test_local_storage_uses_the_same_protocol(api, workspace, tmp_path, eager_tasks, live_server):
    storages = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    path = write_lora(tmp_path / "local.safetensors")
    with override_settings(STORAGES=storages, VAR_DIR=tmp_path):
        started = api.post(
            f"/api/v1/workspaces/{workspace.slug}/loras/uploads/",
            {"filename": path.name, "size": path.stat().st_size},
            format="json",
        ).json()
        part_url = started["parts"][0]["url"].replace("http://testserver", live_server.url)
        put = requests.put(part_url, data=path.read_bytes(), timeout=30)
        assert put.status_code == 200
        forged = requests.put(part_url[:-3] + "abc", data=b"x", timeout=30)
        assert forged.status_code == 403
        with eager_tasks():
            response = api.post(
                f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{started['upload_id']}/complete/",
                {"parts": [{"part_number": 1, "etag": put.headers["ETag"]}]},
                format="json",
            )
        assert response.status_code == 201, response.json()
        lora = LoRA.objects.get()
        assert lora.status == Status.READY
        link = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/{lora.id}/download/").json()
        downloaded = requests.get(link["url"].replace("http://testserver", live_server.url), timeout=30)
        assert downloaded.content == path.read_bytes()
        assert (tmp_path / "media" / lora.file.name).exists()


@pytest.mark.parametrize(
    "family,key_format,filename,expected_expert",
    [
        ("wan-14b", "diffusers", "wan22_t2v_high_noise_style.safetensors", "high"),
        ("wan-14b", "kohya", "musubi_wan22_LowNoise.safetensors", "low"),
        ("wan-14b", "comfyui", "lightx2v_T2V_14B_cfg_step_distill.safetensors", "both"),
        ("wan-5b", "diffusers", "ti2v_style.safetensors", "both"),
        ("wan-1.3b", "comfyui", "wan21_1.3b.safetensors", "both"),
        ("flux", "kohya", "flux_portrait.safetensors", "both"),
        ("flux", "diffusers", "flux_krea.safetensors", "both"),
        ("sdxl", "kohya", "sdxl_lineart.safetensors", "both"),
        ("sd15", "kohya", "sd15_watercolor.safetensors", "both"),
    ],
)
def test_formats_are_accepted_and_detected(api, workspace, tmp_path, family, key_format, filename, expected_expert):
    path = write_lora(tmp_path / filename, family=family, key_format=key_format, rank=8, alpha=8.0, blocks=1)
    response = upload(api, workspace, path)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["base_model"], body["rank"], body["alpha"], body["expert"]) == (family, 8, 8.0, expected_expert)
    assert body["key_format"] == key_format


def test_row_failure_deletes_the_stored_object(api, workspace, tmp_path, nothing_left, monkeypatch):
    from loras.services import ingest

    def broken_row(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingest, "create_lora_row", broken_row)
    path = write_lora(tmp_path / "a.safetensors")
    with pytest.raises(RuntimeError):
        upload(api, workspace, path)
    nothing_left()


def test_local_signed_download_answers_byte_ranges(api, workspace, tmp_path, client):
    """With local storage the signed download endpoint stands in for S3, ranges included (video seeking)."""
    storages = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    path = write_lora(tmp_path / "ranged.safetensors")
    data = path.read_bytes()
    with override_settings(STORAGES=storages, VAR_DIR=tmp_path):
        lora_id = upload(api, workspace, path).json()["id"]
        url = (
            api.get(f"/api/v1/workspaces/{workspace.slug}/loras/{lora_id}/download/")
            .json()["url"]
            .replace("http://testserver", "")
        )
        whole = client.get(url)
        assert (
            whole.status_code == 200 and b"".join(whole.streaming_content) == data and whole["Accept-Ranges"] == "bytes"
        )
        for header, expected in [("bytes=0-7", data[:8]), ("bytes=100-", data[100:]), ("bytes=-16", data[-16:])]:
            part = client.get(url, HTTP_RANGE=header)
            assert part.status_code == 206, header
            assert b"".join(part.streaming_content) == expected
            assert part["Content-Range"].endswith(f"/{len(data)}")
        assert client.get(url, HTTP_RANGE="bytes=999999999-").status_code == 200  # unsatisfiable: the whole object
