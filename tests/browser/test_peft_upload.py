"""A PEFT checkpoint through the library's upload dialog in a real Chromium: adapter_config.json with
adapter_model.safetensors chosen together, or one .zip of both, registered through the app (the API's own
service), then a real Celery worker taking the card to ready; bad checkpoints answered in the row with the server's
own words, and a choice that is no checkpoint said so before anything is sent."""

import json
import zipfile

import pytest
from playwright.sync_api import expect

from loras.models import LoRA, Status
from loras.services import peft_checkpoint
from loras.services.validation import check_app_upload_size
from lorasite.errors import ApplicationError
from tests.browser.test_library import open_upload_dialog
from tests.factories import MembershipFactory
from tests.test_peft_checkpoint import CONFIG, peft_weights
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def refusal(check, *args) -> str:
    """The message the server gives for this input (the dialog must show the same)."""
    with pytest.raises(ApplicationError) as refused:
        check(*args)
    return refused.value.message


def write_config(folder, **changes):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**CONFIG, **changes}))
    return path


def write_zip(path, *members):
    with zipfile.ZipFile(path, "w") as archive:
        for member in members:
            archive.write(member, f"{path.stem}/{member.name}")
    return path


@pytest.fixture
def studio():
    return MembershipFactory(role=Role.OWNER, workspace__name="Wan studio", workspace__slug="wan-studio")


@pytest.mark.slow
def test_two_files_or_one_zip_become_ready_loras(page, sign_in, screenshot, celery_worker, studio, tmp_path):
    weights = peft_weights(tmp_path / "ink-v3")
    config = write_config(tmp_path / "ink-v3")
    archive = write_zip(
        tmp_path / "ink-v4.zip", peft_weights(tmp_path / "ink-v4", seed=4), write_config(tmp_path / "ink-v4", r=4)
    )
    sign_in(studio.user)
    page.goto("/w/wan-studio/loras/")
    dialog = open_upload_dialog(page)
    expect(dialog).to_contain_text("A PEFT checkpoint: its adapter_config.json and adapter_model.safetensors together")

    dialog.locator('input[type="file"]').set_input_files([config, weights])
    pair_row = dialog.locator(".upload-item").filter(has_text="adapter_config.json + adapter_model.safetensors")
    expect(pair_row).to_have_count(1)  # one checkpoint, one row: not two uploads
    expect(pair_row).to_have_attribute("data-state", "ready", timeout=90_000)
    expect(pair_row.locator(".upload-status")).to_have_text("Ready. Open it")

    dialog.locator('input[type="file"]').set_input_files(archive)
    zip_row = dialog.locator(".upload-item").filter(has_text="ink-v4.zip")
    expect(zip_row).to_have_attribute("data-state", "ready", timeout=90_000)
    screenshot("library-upload-peft")

    loras = {lora.name: lora for lora in LoRA.objects.filter(workspace=studio.workspace)}
    assert set(loras) == {"adapter_model", "ink-v4"}
    for lora in loras.values():
        assert lora.status == Status.READY and lora.rank == 4 and lora.alpha == 2.0, lora.error
        assert lora.training["hyperparameters"]["target_modules"] == sorted(CONFIG["target_modules"])
        expect(page.locator(f"#lora-{lora.id}")).to_have_attribute("data-status", "ready")


def test_bad_checkpoints_are_answered_in_their_rows(page, sign_in, screenshot, studio, tmp_path, settings):
    weights = peft_weights(tmp_path / "ckpt")
    ia3 = write_config(tmp_path / "ia3", peft_type="IA3")
    no_config = write_zip(tmp_path / "weights-only.zip", weights)
    sign_in(studio.user)
    page.goto("/w/wan-studio/loras/")
    dialog = open_upload_dialog(page)
    file_input = dialog.locator('input[type="file"]')

    # Sent, and refused by the service with the API's message (nothing stored).
    file_input.set_input_files([ia3, weights])
    row = dialog.locator(".upload-item").nth(0)
    expect(row).to_have_attribute("data-state", "failed")
    expected = refusal(peft_checkpoint.peft_config_parse, ia3.read_bytes())
    assert expected.startswith("adapter_config.json is not a PEFT LoRA config")
    expect(row.locator(".upload-status")).to_have_text(expected)

    file_input.set_input_files(no_config)
    row = dialog.locator(".upload-item").nth(1)
    expect(row).to_have_attribute("data-state", "failed")
    expect(row.locator(".upload-status")).to_have_text(
        "The .zip has no adapter_config.json; a PEFT checkpoint holds adapter_config.json and "
        "adapter_model.safetensors."
    )

    # Not a checkpoint at all: said at once, nothing sent.
    file_input.set_input_files(ia3)
    row = dialog.locator(".upload-item").nth(2)
    expect(row).to_have_attribute("data-state", "failed")
    expect(row.locator(".upload-status")).to_have_text(
        "adapter_config.json needs its adapter_model.safetensors: choose the two files together, or one .zip of both."
    )
    screenshot("library-upload-peft-refused")
    assert not LoRA.objects.exists()

    # Over the limit for uploads through the app: the server's words, before a byte is sent.
    settings.LORASITE_MAX_APP_UPLOAD_BYTES = 1024
    page.reload()
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    dialog = open_upload_dialog(page)
    dialog.locator('input[type="file"]').set_input_files(no_config)
    row = dialog.locator(".upload-item").nth(0)
    expect(row).to_have_attribute("data-state", "failed")
    expect(row.locator(".upload-status")).to_have_text(refusal(check_app_upload_size, no_config.stat().st_size))
    assert posts == []
