"""The S3 API server stopped in the middle of an upload through the app: the client gets a JSON 503 naming
storage, no row is written, and once the server is back the bucket holds no object of the upload (the
multipart upload boto3 could not abort is aborted by the cleanup beat task)."""

import socket
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from moto.server import ThreadedMotoServer

from loras import hashes
from loras.models import LoRA, LoRAUpload
from loras.services import lora_storage_cleanup
from tests.lora_files import write_lora

pytestmark = pytest.mark.django_db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_s3_server():
    """An S3 API server of this test's own (moto keeps the buckets in this process, so the test bucket is
    there too), with the default storage pointed at it; `.stop()` and `.start()` it at will."""
    port = free_port()
    server = {"current": ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)}
    server["current"].start()
    options = {**settings.STORAGES["default"]["OPTIONS"], "endpoint_url": f"http://127.0.0.1:{port}"}

    class Control:
        def stop(self):
            server["current"].stop()

        def start(self):
            server["current"] = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server["current"].start()

    with override_settings(
        STORAGES={**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": options}}
    ):
        yield Control()
    server["current"].stop()


def test_s3_stopped_mid_upload_is_a_json_503_and_leaves_nothing(
    api, workspace, tmp_path, own_s3_server, s3_server, s3_keys, monkeypatch
):
    # Over the 16 MiB multipart threshold: the transfer is under way (multipart created, parts sending) when S3 stops.
    path = write_lora(tmp_path / "big.safetensors", family="wan-14b", rank=128, blocks=2, dtype="bfloat16")
    assert path.stat().st_size > 24 * 1024 * 1024
    real_read = hashes.HashingReader.read
    sent = {"bytes": 0}

    def read_then_stop(self, size=-1):
        chunk = real_read(self, size)
        sent["bytes"] += len(chunk)
        if sent["bytes"] > 16 * 1024 * 1024 and sent.get("stopped") is None:
            sent["stopped"] = True
            own_s3_server.stop()
        return chunk

    monkeypatch.setattr(hashes.HashingReader, "read", read_then_stop)
    with open(path, "rb") as handle:
        response = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart")
    assert sent.get("stopped")
    assert response.status_code == 503, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == "service_unavailable" and body["service"] == "storage"
    assert not LoRA.objects.exists() and not LoRAUpload.objects.exists()

    own_s3_server.start()
    prefix = f"workspaces/{workspace.id}/"
    assert s3_keys(prefix) == []
    # What boto3 could not abort while storage was down, beat's cleanup aborts once it is back.
    later = timezone.now() + timedelta(seconds=settings.LORASITE_ORPHAN_GRACE_SECONDS + 60)
    lora_storage_cleanup(now=later)
    pending = s3_server.list_multipart_uploads(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Prefix=prefix).get(
        "Uploads", []
    )
    assert pending == [] and s3_keys(prefix) == []
