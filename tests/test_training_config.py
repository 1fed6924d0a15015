"""Training provenance: the `training` record at upload (through the app) and by PATCH, refused with a 400 naming the
problem (nothing stored), merged with the file's ss_* metadata into the Configuration tab (grouped, formatted,
"Not set", DPO only when present, a plain message when nothing is known) and edited from the dashboard."""

import json

import pytest
from django.utils.html import escape

from loras.models import LoRA
from loras.training import PARAMETERS, format_value, training_configuration, training_record_clean
from lorasite.errors import InvalidInput
from tests.factories import LoRAFactory
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = pytest.mark.django_db

RECORD = {
    "dataset": "Ink sketches v3",
    "dataset_link": "https://huggingface.co/datasets/acme/ink",
    "base_model_version": "Wan 2.2 T2V-A14B",
    "hyperparameters": {
        "learning_rate": 0.0001,
        "network_dim": 32,
        "gradient_checkpointing": True,
        "target_modules": ["to_q", "to_k", "to_v"],
        "optimizer": "AdamW8bit",
    },
}


def url(lora, suffix: str = "") -> str:
    return f"/api/v1/workspaces/{lora.workspace.slug}/loras/{lora.id}/{suffix}"


# --- the record ---------------------------------------------------------------------------------------------------


def test_record_is_cleaned():
    cleaned = training_record_clean({**RECORD, "hyperparameters": {**RECORD["hyperparameters"], "steps": 2000.0}})
    assert cleaned["hyperparameters"]["steps"] == 2000
    assert isinstance(cleaned["hyperparameters"]["steps"], int)
    assert training_record_clean({"dataset": "", "hyperparameters": {"seed": None}}) == {}
    assert training_record_clean({"hyperparameters": {"target_modules": "to_q, to_k"}}) == {
        "hyperparameters": {"target_modules": ["to_q", "to_k"]}
    }


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"dataset_link": "javascript:alert(1)"}, "training.dataset_link"),
        ({"dataset_link": "ftp://example.com/x"}, "training.dataset_link"),
        ({"owner": "me"}, "training.owner"),
        ({"hyperparameters": {"lerning_rate": 1e-4}}, "training.hyperparameters.lerning_rate"),
        ({"hyperparameters": {"learning_rate": "fast"}}, "training.hyperparameters.learning_rate"),
        ({"hyperparameters": {"epochs": 2.5}}, "training.hyperparameters.epochs"),
        ({"hyperparameters": {"gradient_checkpointing": "yes"}}, "training.hyperparameters.gradient_checkpointing"),
        ({"hyperparameters": {"learning_rate": float("nan")}}, "training.hyperparameters.learning_rate"),
        ({"hyperparameters": [1, 2]}, "training.hyperparameters"),
        ({"dataset": "x" * 501}, "training.dataset"),
        ("a string", "training"),
    ],
)
def test_bad_records_name_the_problem(record, field):
    with pytest.raises(InvalidInput) as caught:
        training_record_clean(record)
    assert field in caught.value.errors
    assert caught.value.message.startswith(field)


def test_patch_sets_and_clears_the_record(api, workspace, owner):
    lora = LoRAFactory(workspace=workspace, created_by=owner)
    response = api.patch(url(lora), {"training": RECORD}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["training"] == RECORD
    groups = {group["category"]: group["rows"] for group in response.json()["configuration"]}
    rate = next(row for row in groups["Training"] if row["key"] == "learning_rate")
    assert rate["value"] == "1e-4"
    assert "typically" in rate["help"]

    assert api.patch(url(lora), {"training": {}}, format="json").json()["training"] == {}
    lora.refresh_from_db()
    assert lora.training == {}


def test_patch_refuses_a_bad_record_and_keeps_the_old(api, workspace, owner):
    lora = LoRAFactory(workspace=workspace, created_by=owner, training={"dataset": "Old"})
    response = api.patch(url(lora), {"training": {"hyperparameters": {"lr": 1}}}, format="json")
    assert response.status_code == 400
    assert "training.hyperparameters.lr" in response.json()["errors"]
    lora.refresh_from_db()
    assert lora.training == {"dataset": "Old"}


def test_roles_and_other_workspaces(client_for, member_of, workspace, outsider):
    lora = LoRAFactory(workspace=workspace)
    viewer = client_for(member_of(Role.VIEWER))
    assert viewer.patch(url(lora), {"training": RECORD}, format="json").status_code == 403
    assert client_for(outsider).patch(url(lora), {"training": RECORD}, format="json").status_code == 404
    lora.refresh_from_db()
    assert lora.training == {}


def test_record_given_at_upload(api, workspace, tmp_path, s3_keys):
    path = write_lora(tmp_path / "ink.safetensors", family="wan-demo", blocks=1, seed=5)

    with path.open("rb") as handle:
        response = api.post(
            f"/api/v1/workspaces/{workspace.slug}/loras/",
            {"file": handle, "training": json.dumps(RECORD)},
            format="multipart",
        )
    assert response.status_code == 201, response.content
    assert LoRA.objects.get(id=response.json()["id"]).training == RECORD

    before = set(s3_keys())
    with path.open("rb") as handle:
        response = api.post(
            f"/api/v1/workspaces/{workspace.slug}/loras/",
            {"file": handle, "name": "Other", "training": json.dumps({"dataset_link": "not a link"})},
            format="multipart",
        )
    assert response.status_code == 400
    assert "training.dataset_link" in response.json()["errors"]
    assert set(s3_keys()) == before  # nothing stored
    assert LoRA.objects.count() == 1


# --- the Configuration tab ----------------------------------------------------------------------------------------


def test_configuration_groups_and_formats():
    groups = training_configuration(
        training_metadata={"learning_rate": 0.0002, "epochs": 10, "train_images": 1200, "mixed_precision": "bf16"},
        training=RECORD,
    )
    assert [group.category for group in groups] == ["Model", "LoRA", "Training", "Hardware", "Checkpointing"]
    values = {row.key: row.value for group in groups for row in group.rows}
    assert values["learning_rate"] == "1e-4"  # the record wins over the file
    assert values["train_images"] == "1,200"
    assert values["gradient_checkpointing"] == "Yes"
    assert values["target_modules"] == "to_q, to_k, to_v"
    assert values["base_model_version"] == "Wan 2.2 T2V-A14B"
    assert values["save_every_n_epochs"] == ""  # shown as Not set
    assert all(parameter.help for parameter in PARAMETERS.values())


def test_dpo_only_when_present_and_nothing_at_all():
    groups = training_configuration(training_metadata={}, training={"hyperparameters": {"dpo_beta": 2500.0}})
    assert groups[-1].category == "DPO"
    assert training_configuration(training_metadata={}, training={}) == []
    assert training_configuration(training_metadata={"top_tags": []}, training={"dataset": "x"}) == []


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (0.0001, "number", "1e-4"),
        (0.00015, "number", "1.5e-4"),
        (0.05, "number", "0.05"),
        (1.0, "number", "1"),
        (2000, "integer", "2,000"),
        (False, "boolean", "No"),
        (["a", "b"], "list", "a, b"),
        (None, "text", ""),
    ],
)
def test_format_value(value, kind, text):
    assert format_value(value, kind) == text


def test_configuration_tab_on_the_page(client, owner, workspace):
    lora = LoRAFactory(workspace=workspace, training=RECORD, training_metadata={"epochs": 12})
    client.force_login(owner)
    html = client.get(f"/w/{workspace.slug}/loras/{lora.id}/").content.decode()
    assert 'id="lora-configuration"' in html
    assert ">Configuration<" in html
    assert "1e-4" in html
    assert "Not set" in html
    assert f'role="tooltip" id="tip-learning_rate">{escape(PARAMETERS["learning_rate"].help)}<' in html
    assert ">DPO<" not in html

    empty = LoRAFactory(workspace=workspace)
    html = client.get(f"/w/{workspace.slug}/loras/{empty.id}/").content.decode()
    assert "No training configuration is known for this LoRA" in html


def test_dashboard_edits_the_record(client, owner, workspace, member_of):
    lora = LoRAFactory(workspace=workspace, created_by=owner)
    client.force_login(owner)
    edit = f"/w/{workspace.slug}/loras/{lora.id}/training/"
    response = client.post(
        edit,
        {
            "dataset": "Ink",
            "dataset_link": "https://example.com/ink",
            "base_model_version": "",
            "hyperparameters": "learning_rate: 1e-4\nepochs = 10\ngradient_checkpointing: yes\n"
            "target_modules: to_q, to_v",
        },
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    lora.refresh_from_db()
    assert lora.training == {
        "dataset": "Ink",
        "dataset_link": "https://example.com/ink",
        "hyperparameters": {
            "learning_rate": 0.0001,
            "epochs": 10,
            "gradient_checkpointing": True,
            "target_modules": ["to_q", "to_v"],
        },
    }
    response = client.post(edit, {"hyperparameters": "lr: 1"}, headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert "lr" in response.content.decode()
    lora.refresh_from_db()
    assert lora.training["dataset"] == "Ink"

    client.force_login(member_of(Role.VIEWER))
    assert client.post(edit, {"dataset": "x"}).status_code == 403
