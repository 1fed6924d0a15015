"""Registering a PEFT checkpoint (adapter_config.json + adapter_model.safetensors, two files or one .zip) through
the app: validated as PEFT, rank/alpha/target modules from the config, keys renamed to diffusers' with the tensor
bytes unchanged; every bad input a 400 naming the problem with nothing stored; roles and another workspace."""

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.test import TestCase
from safetensors.numpy import load_file, save_file

from loras import services
from loras.models import LoRA
from loras.safetensors_header import read_header_from_path
from tests.factories import MembershipFactory, WorkspaceFactory
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = pytest.mark.django_db

CONFIG = {
    "peft_type": "LORA",
    "r": 4,
    "lora_alpha": 2,
    "target_modules": ["to_v", "to_q", "to_k", "to_out.0"],
    "lora_dropout": 0.05,
    "base_model_name_or_path": "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
}


def peft_weights(folder: Path, *, seed: int = 0) -> Path:
    """folder/adapter_model.safetensors as peft's save_pretrained writes it: keys under base_model.model., no
    alpha (the rank and alpha of CONFIG)."""
    folder.mkdir(parents=True, exist_ok=True)
    bare = write_lora(folder / "bare.safetensors", family="wan-demo", key_format="peft", blocks=1, rank=4, seed=seed)
    tensors = {f"base_model.model.{name}": value for name, value in load_file(bare).items()}
    bare.unlink()
    path = folder / "adapter_model.safetensors"
    save_file(tensors, path)
    return path


@pytest.fixture
def weights(tmp_path):
    return peft_weights(tmp_path)


def config_bytes(**changes) -> bytes:
    return json.dumps({**CONFIG, **changes}).encode()


def checkpoint_zip(weights, config: bytes | None = None, *, folder: str = "ink-v3/") -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if config is not None:
            archive.writestr(folder + "adapter_config.json", config)
        if weights is not None:
            archive.write(weights, folder + "adapter_model.safetensors")
    buffer.seek(0)
    buffer.name = "ink-v3.zip"
    return buffer


def upload(api, workspace, **fields):
    return api.post(f"/api/v1/workspaces/{workspace.slug}/loras/", fields, format="multipart")


def named(data: bytes, name: str) -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def test_two_files(api, workspace, weights):
    with weights.open("rb") as handle:
        response = upload(api, workspace, file=handle, adapter_config=named(config_bytes(), "adapter_config.json"))
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["rank"], body["alpha"]) == (4, 2.0)
    assert body["training"]["hyperparameters"] == {
        "network_dim": 4,
        "network_alpha": 2.0,
        "target_modules": ["to_k", "to_out.0", "to_q", "to_v"],
        "lora_dropout": 0.05,
    }
    assert body["training"]["base_model_version"] == "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
    assert body["base_model"] == "wan-demo"

    # The stored file: diffusers' names and metadata, the same tensor bytes.
    lora = LoRA.objects.get(id=body["id"])
    with lora.file.open("rb") as stored, open(weights.parent / "stored.safetensors", "wb") as copy:
        copy.write(stored.read())
    header = read_header_from_path(weights.parent / "stored.safetensors")
    assert all(name.startswith("transformer.blocks.0.") for name in header.tensors)
    assert json.loads(header.metadata["lora_adapter_metadata"]) == {
        "transformer.lora_alpha": 2.0,
        "transformer.r": 4,
        "transformer.target_modules": ["to_k", "to_out.0", "to_q", "to_v"],
    }
    original = load_file(weights)
    converted = load_file(weights.parent / "stored.safetensors")
    assert {name.removeprefix("base_model.model.") for name in original} == {
        name.removeprefix("transformer.") for name in converted
    }
    for name, value in original.items():
        assert (converted["transformer." + name.removeprefix("base_model.model.")] == value).all()

    # diffusers' own converter (the ingest task) maps every tensor to the transformer: the file loads as it is.
    with TestCase.captureOnCommitCallbacks(execute=True):
        ready = services.lora_finish_ingest(lora_id=lora.id)
    assert ready.status == "ready", ready.error
    assert ready.coverage["mapped"] == ready.coverage["tensors"] == len(original)


def test_one_zip(api, workspace, weights):
    response = upload(api, workspace, file=checkpoint_zip(weights, config_bytes()), name="")
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "ink-v3"
    assert response.json()["rank"] == 4


def test_given_record_wins_and_config_fills_in(api, workspace, weights):
    record = {"dataset": "Ink sketches", "hyperparameters": {"network_alpha": 4, "learning_rate": 1e-4}}
    response = upload(
        api, workspace, file=checkpoint_zip(weights, config_bytes()), name="Ink", training=json.dumps(record)
    )
    assert response.status_code == 201, response.content
    training = response.json()["training"]
    assert training["dataset"] == "Ink sketches"
    assert training["hyperparameters"]["network_alpha"] == 4
    assert training["hyperparameters"]["network_dim"] == 4
    assert training["hyperparameters"]["learning_rate"] == 1e-4


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (config_bytes(peft_type="IA3"), "not a PEFT LoRA config (peft_type 'IA3'"),
        (json.dumps({k: v for k, v in CONFIG.items() if k != "peft_type"}).encode(), "no peft_type"),
        (config_bytes(r=0), "r (the rank)"),
        (config_bytes(r="4"), "r (the rank)"),
        (config_bytes(lora_alpha=-1), "lora_alpha"),
        (config_bytes(target_modules=[]), "target_modules"),
        (config_bytes(lora_dropout="none"), "lora_dropout"),
    ],
)
def test_bad_configs_are_400_and_nothing_stored(api, workspace, weights, s3_keys, config, message):
    before = set(s3_keys())
    with weights.open("rb") as handle:
        response = upload(api, workspace, file=handle, adapter_config=named(config, "adapter_config.json"))
    assert response.status_code == 400, response.content
    assert message in response.json()["message"]
    assert "adapter_config" in response.json()["errors"]
    assert set(s3_keys()) == before
    assert not LoRA.objects.exists()


def test_bad_archives_and_pairs_are_400(api, workspace, weights, tmp_path, s3_keys):
    before = set(s3_keys())
    cases = [
        ({"file": checkpoint_zip(None, config_bytes())}, "has no adapter_model.safetensors"),
        ({"file": checkpoint_zip(weights, None)}, "has no adapter_config.json"),
        ({"file": named(b"PK not a zip", "ink.zip")}, "cannot be read"),
        (
            {"file": checkpoint_zip(weights, config_bytes()), "adapter_config": named(config_bytes(), "a.json")},
            "not both",
        ),
        (
            {
                "file": named(b"\x08" + b"\x00" * 7 + b"{}      ", "adapter_model.safetensors"),
                "adapter_config": named(config_bytes(), "adapter_config.json"),
            },
            "not a readable safetensors",
        ),
        ({"file": named(b"x", "adapter_model.bin"), "adapter_config": named(config_bytes(), "c.json")}, ".safetensors"),
    ]
    for fields, message in cases:
        response = upload(api, workspace, **fields)
        assert response.status_code == 400, (message, response.content)
        assert message in response.json()["message"], response.json()
    assert set(s3_keys()) == before
    assert not LoRA.objects.exists()


def test_roles_and_other_workspaces(client_for, member_of, workspace, weights, outsider):
    viewer = client_for(member_of(Role.VIEWER))
    assert upload(viewer, workspace, file=checkpoint_zip(weights, config_bytes())).status_code == 403
    MembershipFactory(user=outsider, workspace=WorkspaceFactory(), role=Role.OWNER)
    assert upload(client_for(outsider), workspace, file=checkpoint_zip(weights, config_bytes())).status_code == 404
    assert not LoRA.objects.exists()
