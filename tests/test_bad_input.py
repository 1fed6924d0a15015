"""Bad input answers a specific JSON 4xx, never a 500 or Django's HTML error page."""

import json

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from loras.models import LoRA
from lorasite.object_store import sign_token
from tests.lora_files import write_lora

pytestmark = pytest.mark.django_db

DEEP_JSON = "[" * 10_000 + "]" * 10_000


@pytest.fixture
def token_client(owner) -> Client:
    """A plain Django client with a token: it goes through the whole request stack, middleware included."""
    return Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")


@pytest.fixture
def local_storage(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }


def test_a_body_over_the_memory_limit_answers_json_413_naming_the_limit(token_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = json.dumps({"name": "x" * 2048})
    response = token_client.post("/api/v1/workspaces/", body, content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "payload_too_large"
    assert "1024 bytes" in response.json()["message"]
    assert response.json()["limit_bytes"] == 1024


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/api/v1/auth/token/"),
        ("post", "/api/v1/workspaces/"),
        ("patch", "/api/v1/workspaces/{slug}/"),
        ("post", "/api/v1/workspaces/{slug}/members/"),
        ("post", "/api/v1/workspaces/{slug}/loras/"),
        ("post", "/api/v1/workspaces/{slug}/loras/uploads/"),
        ("post", "/api/v1/workspaces/{slug}/generations/"),
    ],
)
def test_json_nested_ten_thousand_deep_answers_400(token_client, workspace, method, path):
    response = getattr(token_client, method)(
        path.format(slug=workspace.slug), DEEP_JSON, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert "nested too deeply" in response.json()["message"]


def test_a_download_token_at_the_part_endpoint_is_refused(local_storage, client):
    token = sign_token({"key": "workspaces/1/loras/x/a.safetensors", "filename": "a.safetensors"}, expires_in=60)
    response = client.put(f"/storage/parts/{token}", b"data", content_type="application/octet-stream")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_a_part_token_at_the_download_endpoint_is_refused(local_storage, client):
    token = sign_token({"upload_id": "abc", "part": 1}, expires_in=60)
    response = client.get(f"/storage/files/{token}")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_a_nul_byte_in_safetensors_metadata_is_stripped_before_it_reaches_the_database(api, workspace, tmp_path):
    path = write_lora(tmp_path / "nul.safetensors", seed=5, blocks=1, metadata={"ss_output_name": "style\x00name"})
    with open(path, "rb") as handle:
        response = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart")
    assert response.status_code == 201, response.json()
    lora = LoRA.objects.get(id=response.json()["id"])
    assert lora.header_metadata["ss_output_name"] == "stylename"


BIDI_NAMES = ["evil\u202egpj.exe", "a\u202ab", "a\u2066b", "a\u2069b"]


@pytest.mark.parametrize("name", BIDI_NAMES)
def test_workspace_names_with_bidi_controls_are_refused(api, workspace, name):
    created = api.post("/api/v1/workspaces/", {"name": name}, format="json")
    renamed = api.patch(f"/api/v1/workspaces/{workspace.slug}/", {"name": name}, format="json")
    for response in (created, renamed):
        assert response.status_code == 400
        assert list(response.json()["errors"]) == ["name"]
        assert "bidirectional" in response.json()["message"]


@pytest.mark.parametrize("name", BIDI_NAMES)
def test_lora_names_with_bidi_controls_are_refused(api, workspace, tmp_path, name):
    path = write_lora(tmp_path / "ok.safetensors", seed=6, blocks=1)
    with open(path, "rb") as handle:
        upload = api.post(
            f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle, "name": name}, format="multipart"
        )
    started = api.post(
        f"/api/v1/workspaces/{workspace.slug}/loras/uploads/",
        {"filename": "ok.safetensors", "size": 100, "name": name},
        format="json",
    )
    for response in (upload, started):
        assert response.status_code == 400, response.json()
        assert list(response.json()["errors"]) == ["name"]
    assert not LoRA.objects.exists()

    with open(path, "rb") as handle:
        lora_id = api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", {"file": handle}, format="multipart").json()[
            "id"
        ]
    renamed = api.patch(f"/api/v1/workspaces/{workspace.slug}/loras/{lora_id}/", {"name": name}, format="json")
    assert renamed.status_code == 400
    assert list(renamed.json()["errors"]) == ["name"]


def test_a_filename_with_bidi_controls_is_refused(api, workspace):
    response = api.post(
        f"/api/v1/workspaces/{workspace.slug}/loras/uploads/",
        {"filename": "evil\u202egpj.safetensors", "size": 100},
        format="json",
    )
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["file"]
