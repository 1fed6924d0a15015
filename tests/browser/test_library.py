"""The LoRA library in a real Chromium against a live server: uploads through the dialog straight to
S3 (moto's server, presigned part URLs, a failed part retried), a real Celery worker taking the card
from processing to ready, duplicates, inline rename, delete behind a confirmation dialog, the
client-side checks in the server's words, and what a viewer and an outsider get."""

import re

import pytest
from playwright.sync_api import expect

from loras import services
from loras.models import LoRA, LoRAUpload, Status
from lorasite.errors import ApplicationError
from tests.factories import MembershipFactory
from tests.lora_files import write_lora, write_sparse_lora
from tests.test_library_pages import make_lora
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024


def server_message(filename: str, size: int) -> str:
    """What the server answers for this declared file (the dialog must say the same)."""
    with pytest.raises(ApplicationError) as refused:
        services.check_declared_file(filename=filename, size=size)
    return refused.value.message


def open_upload_dialog(page):
    page.get_by_role("button", name="Upload LoRAs").click()
    dialog = page.get_by_role("dialog", name="Upload LoRAs")
    expect(dialog).to_be_visible()
    return dialog


@pytest.mark.slow
def test_upload_rename_and_delete(page, sign_in, screenshot, celery_worker, settings, tmp_path):
    settings.LORASITE_UPLOAD_PART_BYTES = 5 * MiB  # a 6 MB file goes up in two parts
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Wan studio", workspace__slug="wan-studio")
    workspace = owner.workspace
    # Neighbours for the grid: other families and experts, a failed import, an inactive one.
    make_lora(
        workspace,
        owner.user,
        name="Anime lineart",
        base_model="flux",
        expert="both",
        tags=["style"],
        trigger_words=["lineart"],
        use_count=12,
    )
    make_lora(
        workspace,
        owner.user,
        name="Low-noise detail",
        expert="low",
        base_model="wan-14b",
        tags=["detail"],
        is_active=False,
    )
    make_lora(
        workspace,
        owner.user,
        name="Portrait XL",
        base_model="sdxl",
        expert="both",
        trigger_words=["ohwx man", "studio light", "bokeh", "35mm", "film grain"],
    )
    make_lora(
        workspace,
        owner.user,
        name="broken_download",
        status=Status.FAILED,
        sha256="",
        file="",
        error="This is not a valid safetensors file: the header length prefix points past the end of the file.",
    )
    path = write_lora(
        tmp_path / "golden_hour_high_noise.safetensors",
        family="wan-demo",
        key_format="kohya",
        kohya_metadata=True,
        blocks=2,
        std=0.3,
        rank=3072,
        alpha=3072.0,
    )
    assert path.stat().st_size > 5 * MiB

    # The first attempt at part 1 fails on its way to S3; the dialog must retry it.
    failures = []

    def fail_part_one_once(route):
        if route.request.method == "PUT" and not failures:
            failures.append(route.request.url)
            return route.fulfill(status=500, headers={"Access-Control-Allow-Origin": "*"}, body="simulated outage")
        return route.continue_()

    page.route(re.compile(r".*/lorasite-test/workspaces/.*partNumber=1(&|$).*"), fail_part_one_once)

    sign_in(owner.user)
    page.get_by_role("link", name="Wan studio").click()
    expect(page).to_have_url(re.compile(r"/w/wan-studio/loras/$"))
    expect(page.get_by_role("heading", name="LoRA library")).to_be_visible()

    dialog = open_upload_dialog(page)
    dialog.locator('input[type="file"]').set_input_files(path)
    row = dialog.locator(".upload-item").filter(has_text=path.name)
    expect(row.locator("progress")).to_be_visible()
    expect(row).to_have_attribute("data-state", "ready", timeout=90_000)
    assert row.locator("progress").evaluate("bar => bar.value") == 100
    expect(row.locator(".upload-status")).to_have_text("Ready. Open it")
    assert len(failures) == 1 and "X-Amz-Signature=" in failures[0]  # a presigned S3 URL, failed once, then retried
    lora = LoRA.objects.get(original_filename=path.name)
    assert lora.status == Status.READY and lora.expert == "high" and lora.base_model == "wan-demo"
    assert not LoRAUpload.objects.exists()

    card = page.locator(f"#lora-{lora.id}")
    expect(card).to_have_attribute("data-status", "ready")
    expect(card).to_contain_text("golden_hour_high_noise")
    expect(card).to_contain_text("High noise")
    expect(card).to_contain_text("Wan demo (tiny)")

    # The same content again: the ingest task finds the duplicate; the row links to the original, and the library
    # lists no card for it.
    dialog.locator('input[type="file"]').set_input_files(path)
    duplicate_row = dialog.locator(".upload-item").nth(1)
    expect(duplicate_row).to_have_attribute("data-state", "duplicate", timeout=90_000)
    expect(duplicate_row).to_contain_text("This file is already in the workspace as 'golden_hour_high_noise' version 1")
    expect(duplicate_row.get_by_role("link", name="Open the existing LoRA")).to_have_attribute(
        "href", f"/w/wan-studio/loras/{lora.id}/"
    )
    expect(page.locator("#results-summary")).to_contain_text("5 LoRAs")  # re-rendered, without the duplicate
    expect(page.locator(".lora-card[data-status='failed']")).to_have_count(1)  # only broken_download
    screenshot("library-upload")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Upload LoRAs")).to_be_focused()
    screenshot("library")

    # Detail page: inline rename. An empty name shows the message; Escape cancels; Enter saves.
    card.get_by_role("link", name="golden_hour_high_noise").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("golden_hour_high_noise")
    expect(page.get_by_role("button", name="Copy “ohwx woman”")).to_be_visible()
    page.get_by_role("link", name=re.compile("^Rename")).click()
    name_input = page.get_by_label("Name", exact=True)
    expect(name_input).to_be_focused()
    name_input.fill("")
    name_input.press("Enter")
    expect(page.locator("#id_name_error")).to_have_text("A name needs 1 to 100 characters.")
    expect(name_input).to_be_focused()
    name_input.fill("Something else")
    name_input.press("Escape")
    expect(page.get_by_role("heading", level=1)).to_contain_text("golden_hour_high_noise")
    expect(page.get_by_role("link", name=re.compile("^Rename"))).to_be_focused()
    page.keyboard.press("Enter")  # the focused Rename link opens the editor again
    page.get_by_label("Name", exact=True).fill("Golden hour")
    page.get_by_label("Name", exact=True).press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Golden hour")
    expect(page.get_by_role("status").filter(has_text="Renamed.")).to_be_visible()
    expect(page).to_have_title("Golden hour · Library · Wan studio · lorasite")
    expect(page.get_by_role("navigation", name="Breadcrumb")).to_contain_text("Golden hour")
    lora.refresh_from_db()
    assert lora.name == "Golden hour"
    # Details: the editor opens with the focus in it; saving updates the badges at the top too.
    page.get_by_role("link", name="Edit details").click()
    expect(page.get_by_label("Tags")).to_be_focused()
    page.get_by_label("Tags").fill("golden, warm light")
    page.get_by_label("Expert").select_option("low")
    page.get_by_role("button", name="Save details").click()
    expect(page.get_by_role("status").filter(has_text="Details saved.")).to_be_visible()
    expect(page.get_by_role("list", name="Summary")).to_contain_text("Low noise")
    expect(page.get_by_role("link", name="Edit details")).to_be_focused()
    screenshot("lora-detail")

    # Delete: the dialog opens, Escape closes it and gives the focus back; confirming deletes.
    delete_button = page.get_by_role("button", name="Delete…")
    delete_button.click()
    confirm = page.get_by_role("dialog", name="Delete “Golden hour”?")
    expect(confirm).to_be_visible()
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(confirm).to_be_hidden()
    expect(delete_button).to_be_focused()
    delete_button.click()
    confirm.get_by_role("button", name="Delete LoRA").click()
    expect(page).to_have_url(re.compile(r"/w/wan-studio/loras/$"))
    expect(page.get_by_role("status").filter(has_text="“Golden hour” version 1 was deleted.")).to_be_visible()
    expect(page.locator(f"#lora-{lora.id}")).to_have_count(0)
    lora.refresh_from_db()
    assert lora.deleted_at is not None

    # Search and filters update the results in place, and the URL with them.
    page.get_by_role("searchbox", name="Search").fill("lineart")
    expect(page.locator(".lora-card")).to_have_count(1)
    expect(page.locator(".lora-card")).to_contain_text("Anime lineart")
    expect(page).to_have_url(re.compile(r"search=lineart"))
    page.get_by_role("searchbox", name="Search").fill("")
    page.get_by_label("Expert").select_option("low")
    expect(page.locator(".lora-card")).to_have_count(1)
    expect(page.locator(".lora-card")).to_contain_text("Low-noise detail")


def test_client_side_checks_speak_with_the_servers_words(page, sign_in, settings, tmp_path):
    settings.LORASITE_MAX_LORA_BYTES = 1_500_000
    owner = MembershipFactory(role=Role.OWNER)
    files = {
        "model.ckpt": b"\x80\x04pickle",
        "notes.txt": b"hello",
        "empty.safetensors": b"",
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    paths.append(write_sparse_lora(tmp_path / "huge.safetensors", 2_000_000))

    sign_in(owner.user)
    page.goto(f"/w/{owner.workspace.slug}/loras/")
    expect(page.get_by_role("heading", name="No LoRAs yet")).to_be_visible()
    page.get_by_role("button", name="Upload your first LoRA").click()
    dialog = page.get_by_role("dialog", name="Upload LoRAs")
    dialog.locator('input[type="file"]').set_input_files(paths)
    for path in paths:
        row = dialog.locator(".upload-item").filter(has_text=path.name)
        expect(row).to_have_attribute("data-state", "failed")
        expect(row.locator(".upload-status")).to_have_text(server_message(path.name, path.stat().st_size))
    assert not LoRAUpload.objects.exists() and not LoRA.objects.exists()  # refused before any request


def test_viewer_sees_no_upload_and_outsiders_get_404(page, sign_in):
    viewer = MembershipFactory(role=Role.VIEWER, workspace__name="Team")
    make_lora(viewer.workspace, None, name="Shared style")
    MembershipFactory(user=viewer.user, role=Role.OWNER, workspace__name="Side project")
    other = MembershipFactory(role=Role.OWNER, workspace__slug="not-yours")
    theirs = make_lora(other.workspace, other.user, name="Secret")

    sign_in(viewer.user)
    page.goto(f"/w/{viewer.workspace.slug}/loras/")
    expect(page.get_by_role("link", name="Shared style")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Upload"))).to_have_count(0)
    page.get_by_role("link", name="Shared style").click()
    expect(page.get_by_role("link", name="Download")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("^Rename"))).to_have_count(0)
    expect(page.get_by_role("button", name="Delete…")).to_have_count(0)

    # The workspace menu lists the user's workspaces; Escape closes it.
    page.locator(".switcher summary").click()
    expect(page.get_by_role("link", name=re.compile("Side project"))).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("link", name=re.compile("Side project"))).to_be_hidden()

    for url in (
        "/w/not-yours/loras/",
        f"/w/not-yours/loras/{theirs.id}/",
        f"/w/{viewer.workspace.slug}/loras/{theirs.id}/",
    ):
        response = page.goto(url)
        assert response.status == 404, url
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        expect(page.get_by_text("Secret")).to_have_count(0)
