"""Uploads racing each other on PostgreSQL with real threads and the real S3 API: complete against abort,
a second complete, same-name and same-content uploads. Each asserts the answers, the final rows and that
the bucket holds exactly the objects the rows name."""

import builtins
import hashlib
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import override_settings

from loras.models import LoRA, LoRAUpload, Status
from loras.services import rows
from lorasite.object_store import S3ObjectStore
from tests.lora_files import write_lora

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.USING_POSTGRES, reason="row locks need PostgreSQL"),
]


def in_threads(*calls):
    """Run each call in its own thread (each with its own database connection); their results in order."""
    results: list = [None] * len(calls)

    def run(index, call):
        try:
            results[index] = call()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.fixture
def bucket_matches_rows(s3_server, s3_keys, workspace):
    """Call it at the end: the workspace's objects are exactly the files its rows name, and no multipart is open."""

    def check():
        named = sorted(LoRA.objects.filter(workspace=workspace).exclude(file="").values_list("file", flat=True))
        assert sorted(s3_keys(f"workspaces/{workspace.id}/")) == named
        pending = s3_server.list_multipart_uploads(Bucket=settings.AWS_STORAGE_BUCKET_NAME).get("Uploads", [])
        assert [u["Key"] for u in pending if u["Key"].startswith(f"workspaces/{workspace.id}/")] == []

    return check


def start_and_put(api, workspace, path: Path, **options) -> tuple[str, list[dict]]:
    body = {"filename": path.name, "size": path.stat().st_size, **options}
    started = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/uploads/", body, format="json").json()
    data = path.read_bytes()
    parts = []
    for part in started["parts"]:
        offset = (part["part_number"] - 1) * started["part_size"]
        put = requests.put(part["url"], data=data[offset : offset + started["part_size"]], timeout=30)
        assert put.status_code == 200, put.text
        parts.append({"part_number": part["part_number"], "etag": put.headers["ETag"]})
    return started["upload_id"], parts


class TestCompleteAndAbort:
    def test_abort_during_complete_waits_and_keeps_the_lora_file(
        self, api, client_for, owner, workspace, tmp_path, monkeypatch, bucket_matches_rows
    ):
        """upload.js sends DELETE when `complete` times out at a proxy while the server is still assembling."""
        upload_id, parts = start_and_put(api, workspace, write_lora(tmp_path / "a.safetensors"))
        assembled = threading.Event()
        real_complete = S3ObjectStore.multipart_complete

        def slow_complete(self, *args, **kwargs):
            real_complete(self, *args, **kwargs)
            assembled.set()
            time.sleep(1.0)  # still finishing when the abort arrives

        monkeypatch.setattr(S3ObjectStore, "multipart_complete", slow_complete)
        base = f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{upload_id}/"

        def complete():
            return client_for(owner).post(base + "complete/", {"parts": parts}, format="json")

        def abort():
            assert assembled.wait(timeout=30)
            return client_for(owner).delete(base)

        completed, aborted = in_threads(complete, abort)
        assert completed.status_code == 201, completed.json()
        assert aborted.status_code == 409, aborted.content
        lora = LoRA.objects.get()
        assert aborted.json()["existing_lora_id"] == lora.id
        assert lora.status == Status.PROCESSING and lora.file.name
        assert not LoRAUpload.objects.exists()
        bucket_matches_rows()

    def test_complete_during_abort_is_404_and_leaves_nothing(
        self, api, client_for, owner, workspace, tmp_path, monkeypatch, bucket_matches_rows
    ):
        upload_id, parts = start_and_put(api, workspace, write_lora(tmp_path / "a.safetensors"))
        aborting = threading.Event()
        real_abort = S3ObjectStore.multipart_abort

        def slow_abort(self, *args, **kwargs):
            aborting.set()
            time.sleep(1.0)
            real_abort(self, *args, **kwargs)

        monkeypatch.setattr(S3ObjectStore, "multipart_abort", slow_abort)
        base = f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{upload_id}/"

        def complete():
            assert aborting.wait(timeout=30)
            return client_for(owner).post(base + "complete/", {"parts": parts}, format="json")

        aborted, completed = in_threads(lambda: client_for(owner).delete(base), complete)
        assert aborted.status_code == 204
        assert completed.status_code == 404, completed.json()
        assert not LoRA.objects.exists() and not LoRAUpload.objects.exists()
        bucket_matches_rows()

    def test_concurrent_completes_answer_the_same_lora(
        self, api, client_for, owner, workspace, tmp_path, bucket_matches_rows
    ):
        upload_id, parts = start_and_put(api, workspace, write_lora(tmp_path / "a.safetensors"))
        url = f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{upload_id}/complete/"
        answers = in_threads(*[lambda: client_for(owner).post(url, {"parts": parts}, format="json")] * 3)
        assert [a.status_code for a in answers] == [201] * 3, [a.content for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
        assert LoRA.objects.count() == 1 and not LoRAUpload.objects.exists()
        bucket_matches_rows()

    def test_abort_after_complete_is_409_and_the_file_stays(self, api, workspace, tmp_path, bucket_matches_rows):
        upload_id, parts = start_and_put(api, workspace, write_lora(tmp_path / "a.safetensors"))
        base = f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{upload_id}/"
        lora_id = api.post(base + "complete/", {"parts": parts}, format="json").json()["id"]
        aborted = api.delete(base)
        assert aborted.status_code == 409 and aborted.json()["existing_lora_id"] == lora_id
        assert api.post(base + "complete/", {"parts": parts}, format="json").json()["id"] == lora_id
        bucket_matches_rows()


class TestSameNameAndSameContent:
    @pytest.fixture
    def wide_race(self, monkeypatch):
        """Widen the window between choosing a version and writing the row, as a slow database would."""
        real = rows.resolve_name_version

        def slow(**kwargs):
            chosen = real(**kwargs)
            time.sleep(0.2)
            return chosen

        monkeypatch.setattr(rows, "resolve_name_version", slow)

    def upload(self, client, workspace, path: Path, **fields):
        with open(path, "rb") as handle:
            return client.post(
                f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle, **fields}, format="multipart"
            )

    def test_eight_different_files_with_one_name_get_eight_versions(
        self, client_for, owner, workspace, tmp_path, wide_race, bucket_matches_rows
    ):
        paths = [write_lora(tmp_path / f"f{i}.safetensors", seed=i) for i in range(8)]
        answers = in_threads(*[lambda p=p: self.upload(client_for(owner), workspace, p, name="Same") for p in paths])
        assert [a.status_code for a in answers] == [201] * 8, [a.content for a in answers]
        versions = sorted(int(v) for v in LoRA.objects.filter(name="Same").values_list("version", flat=True))
        assert versions == list(range(1, 9))
        bucket_matches_rows()

    def test_eight_multipart_completes_with_one_name_get_eight_versions(
        self, api, client_for, owner, workspace, tmp_path, wide_race, bucket_matches_rows
    ):
        started = [
            start_and_put(api, workspace, write_lora(tmp_path / f"f{i}.safetensors", seed=i), name="Same")
            for i in range(8)
        ]
        base = f"/api/v1/workspaces/{workspace.slug}/loras/uploads/"
        answers = in_threads(
            *[
                lambda u=u, p=p: client_for(owner).post(f"{base}{u}/complete/", {"parts": p}, format="json")
                for u, p in started
            ]
        )
        assert [a.status_code for a in answers] == [201] * 8, [a.content for a in answers]
        assert sorted(int(v) for v in LoRA.objects.filter(name="Same").values_list("version", flat=True)) == list(
            range(1, 9)
        )
        bucket_matches_rows()

    def test_same_content_at_once_is_stored_once(
        self, client_for, owner, workspace, tmp_path, wide_race, bucket_matches_rows
    ):
        path = write_lora(tmp_path / "a.safetensors")
        answers = in_threads(*[lambda: self.upload(client_for(owner), workspace, path)] * 4)
        assert sorted(a.status_code for a in answers) == [201, 409, 409, 409], [a.content for a in answers]
        lora = LoRA.objects.get()
        assert all(a.json()["existing_lora_id"] == lora.id for a in answers if a.status_code == 409)
        bucket_matches_rows()


class TestBoundedParts:
    def test_s3_part_urls_sign_each_parts_exact_length(self, api, workspace, monkeypatch):
        signed: list[dict] = []
        real = S3ObjectStore.multipart_part_url

        def spy(self, *args, **kwargs):
            url = real(self, *args, **kwargs)
            signed.append(
                {"bytes": kwargs["part_bytes"], "headers": parse_qs(urlparse(url).query)["X-Amz-SignedHeaders"][0]}
            )
            return url

        monkeypatch.setattr(S3ObjectStore, "multipart_part_url", spy)
        size = 12 * 1024 * 1024
        with override_settings(LORASITE_UPLOAD_PART_BYTES=5 * 1024 * 1024):
            started = api.post(
                f"/api/v1/workspaces/{workspace.slug}/loras/uploads/",
                {"filename": "a.safetensors", "size": size},
                format="json",
            )
        assert started.status_code == 201
        assert [s["bytes"] for s in signed] == [5 * 1024 * 1024, 5 * 1024 * 1024, 2 * 1024 * 1024]
        assert all("content-length" in s["headers"].split(";") for s in signed)  # S3 refuses any other length

    def test_local_part_endpoint_refuses_a_body_over_the_part(self, api, workspace, tmp_path):
        storages = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(tmp_path / "media")},
            },
        }
        path = write_lora(tmp_path / "a.safetensors")
        size = path.stat().st_size
        with override_settings(STORAGES=storages, VAR_DIR=tmp_path):
            body = {"filename": path.name, "size": size}
            started = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/uploads/", body, format="json").json()
            part_url = urlparse(started["parts"][0]["url"]).path
            too_long = path.read_bytes() + b"x"
            declared = api.generic("PUT", part_url, too_long, content_type="application/octet-stream")
            assert declared.status_code == 413 and declared.json()["limit_bytes"] == size
            assert not any((tmp_path / "multipart").rglob("*.part")) and not any(
                (tmp_path / "multipart").rglob("*.writing")
            )
            exact = api.generic("PUT", part_url, path.read_bytes(), content_type="application/octet-stream")
            assert exact.status_code == 200

    def test_an_object_of_another_size_than_declared_is_refused_and_deleted(
        self, api, workspace, tmp_path, bucket_matches_rows
    ):
        path = write_lora(tmp_path / "a.safetensors")
        body = {"filename": path.name, "size": path.stat().st_size - 1}
        started = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/uploads/", body, format="json").json()
        put = requests.put(
            started["parts"][0]["url"], data=path.read_bytes(), timeout=30
        )  # moto does not check signatures
        parts = [{"part_number": 1, "etag": put.headers["ETag"]}]
        response = api.post(
            f"/api/v1/workspaces/{workspace.slug}/loras/uploads/{started['upload_id']}/complete/",
            {"parts": parts},
            format="json",
        )
        assert response.status_code == 400 and "declared" in response.json()["message"]
        assert not LoRA.objects.exists() and not LoRAUpload.objects.exists()
        bucket_matches_rows()


class TestThroughTheApp:
    def test_the_file_is_read_once_to_store_and_hash_it(self, api, workspace, tmp_path, monkeypatch):
        path = write_lora(tmp_path / "big.safetensors", family="wan-14b", rank=64, blocks=2, dtype="bfloat16")
        size = path.stat().st_size
        bytes_read = {"total": 0}
        real_open = builtins.open

        class Counting:
            def __init__(self, handle):
                self.handle = handle

            def read(self, *args):
                chunk = self.handle.read(*args)
                bytes_read["total"] += len(chunk)
                return chunk

            def readinto(self, buffer):
                count = self.handle.readinto(buffer)
                bytes_read["total"] += count or 0
                return count

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

        def counting_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            # Django's spooled copy of the upload: every read of it after the request body arrived.
            spooled = isinstance(file, (str, Path)) and str(file).endswith(".upload.safetensors")
            return Counting(handle) if spooled and "r" in mode else handle

        monkeypatch.setattr(builtins, "open", counting_open)
        with open(path, "rb") as handle:
            response = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart")
        monkeypatch.undo()
        assert response.status_code == 201, response.json()
        lora = LoRA.objects.get()
        assert lora.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        # Once for storage and the hash, plus the header's ranged reads; not a second pass.
        assert size <= bytes_read["total"] < size + 1024 * 1024, (bytes_read, size)

    @override_settings(LORASITE_MAX_APP_UPLOAD_BYTES=64 * 1024)
    def test_over_the_app_limit_is_413_naming_it_and_the_multipart_upload(self, api, workspace, tmp_path, s3_keys):
        path = write_lora(tmp_path / "big.safetensors", family="wan-14b", rank=64, blocks=1)
        assert path.stat().st_size > 2 * 1024 * 1024  # read first: the declared length is over the limit + 1 MiB
        with open(path, "rb") as handle:
            early = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart")
        small = write_lora(tmp_path / "small.safetensors", rank=32)
        assert 64 * 1024 < small.stat().st_size < 1024 * 1024  # within the 1 MiB allowance: the service refuses it
        with open(small, "rb") as handle:
            late = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart")
        for response in (early, late):
            assert response.status_code == 413, response.json()
            body = response.json()
            assert "LORASITE_MAX_APP_UPLOAD_BYTES" in body["message"] and "multipart" in body["message"]
            assert body["limit_bytes"] == 64 * 1024
        assert not LoRA.objects.exists() and s3_keys(f"workspaces/{workspace.id}/") == []


class TestQuota:
    def test_multipart_starts_side_by_side_cannot_overshoot_the_quota_together(
        self, client_for, owner, workspace, monkeypatch
    ):
        """Each upload fits alone, both do not: one start is refused, whatever their timing."""
        real_create = S3ObjectStore.multipart_create

        def slow_create(self, *args, **kwargs):
            time.sleep(1.0)  # between the quota check and the saved upload row
            return real_create(self, *args, **kwargs)

        monkeypatch.setattr(S3ObjectStore, "multipart_create", slow_create)
        url = f"/api/v1/workspaces/{workspace.slug}/loras/uploads/"

        def start(name):
            return lambda: client_for(owner).post(url, {"filename": name, "size": 600}, format="json")

        with override_settings(LORASITE_WORKSPACE_QUOTA_BYTES=1000):
            answers = in_threads(start("a.safetensors"), start("b.safetensors"))
        assert sorted(a.status_code for a in answers) == [201, 413], [a.content for a in answers]
        assert LoRAUpload.objects.count() == 1

    def test_uploads_through_the_app_side_by_side_cannot_overshoot_the_quota_together(
        self, client_for, owner, workspace, tmp_path, monkeypatch, bucket_matches_rows
    ):
        """Both files pass the check before storing; the check under the lock after storing refuses one,
        and its copy is deleted."""
        files = [write_lora(tmp_path / f"{name}.safetensors", seed=seed) for seed, name in enumerate("ab")]
        size = files[0].stat().st_size
        real_save = S3ObjectStore.save_stream

        def slow_save(self, *args, **kwargs):
            time.sleep(1.0)  # both requests are past the first check before either row exists
            return real_save(self, *args, **kwargs)

        monkeypatch.setattr(S3ObjectStore, "save_stream", slow_save)
        url = f"/api/v1/workspaces/{workspace.slug}/loras/"

        def upload(path):
            def send():
                with open(path, "rb") as handle:
                    return client_for(owner).post(url, {"file": handle}, format="multipart")

            return send

        with override_settings(LORASITE_WORKSPACE_QUOTA_BYTES=size * 3 // 2):
            answers = in_threads(*(upload(path) for path in files))
        assert sorted(a.status_code for a in answers) == [201, 413], [a.content for a in answers]
        refused = next(a for a in answers if a.status_code == 413).json()
        assert refused["code"] == "storage_quota_exceeded" and "does not fit" in refused["message"]
        assert LoRA.objects.count() == 1
        bucket_matches_rows()
