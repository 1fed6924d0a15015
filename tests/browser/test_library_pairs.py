"""Pairs and the library at scale in a real Chromium: the proposal banner pairs two halves, the library shows the
pair as one card, the compact list shows at least 20 LoRAs at 1440×900 and is remembered, bulk tag and bulk delete
(one confirmation), deleting a half asks what to do with the pair, and "Use in Generate" fills the form."""

import pytest
from playwright.sync_api import expect

from loras.models import LoRA, LoRAPair
from tests.factories import LoRAFactory, MembershipFactory
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def library(sign_in):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Wan studio", workspace__slug="wan-studio")
    workspace = owner.workspace

    def lora(filename: str, **fields) -> LoRA:
        return LoRAFactory(
            workspace=workspace,
            created_by=owner.user,
            name=filename.removesuffix(".safetensors"),
            original_filename=filename,
            file=f"workspaces/{workspace.id}/loras/{filename}",
            base_model="wan-demo",
            **fields,
        )

    for index in range(22):
        lora(f"style_{index:02d}_cinematic_lighting_v2.safetensors", tags=["style"], rank=8 + index)
    high = lora("golden_hour_high_noise.safetensors", expert="high", trigger_words=["golden hour", "warm light"])
    low = lora("golden_hour_low_noise.safetensors", expert="low", preferred_weight=0.7)
    sign_in(owner.user)
    return workspace, high, low


def test_pair_from_the_proposal_and_see_it_as_one_card(page, screenshot, library):
    workspace, high, low = library
    page.goto(f"/w/{workspace.slug}/loras/{low.id}/")
    banner = page.get_by_role("region", name="golden_hour_high_noise looks like this LoRA's partner")
    expect(banner).to_contain_text("differs only by the expert marker")
    screenshot("lora-pair-proposal")
    banner.get_by_role("button", name="Pair with golden_hour_high_noise").click()
    expect(page.get_by_role("heading", name="Pair “golden_hour”")).to_be_visible()
    pair = LoRAPair.objects.get()
    assert (pair.high_id, pair.low_id, pair.weight_low) == (high.id, low.id, 0.7)
    expect(page.get_by_role("button", name="Unpair")).to_be_visible()
    screenshot("lora-pair-detail")

    page.goto(f"/w/{workspace.slug}/loras/?ordering=name")
    card = page.locator(".pair-card")
    expect(card).to_have_count(1)
    expect(card.get_by_role("heading")).to_have_text("golden_hour")
    expect(card.locator(".badges")).to_contain_text("High noise")
    expect(card.locator(".badges")).to_contain_text("Low noise")
    expect(card.get_by_role("link", name="golden_hour_low_noise")).to_have_attribute(
        "href", f"/w/{workspace.slug}/loras/{low.id}/"
    )
    expect(page.locator("#results-summary")).to_contain_text("23 LoRAs")  # the pair counts once
    card.scroll_into_view_if_needed()
    screenshot("library-pairs")

    # Quick actions: copy the trigger words; "Use in Generate" fills both sections with the pair's weights.
    card.get_by_role("button", name="Copy trigger words").click()
    expect(page.get_by_text("Copied “golden hour, warm light”.")).to_be_attached()
    card.get_by_role("link", name="Use in Generate").click()
    page.wait_for_url(f"**/w/{workspace.slug}/generate/**")
    expect(page.locator(f'input[name="lora_id"][value="{high.id}"]')).to_have_count(1)
    expect(page.locator(f'input[name="lora_id"][value="{low.id}"]')).to_have_count(1)
    screenshot("generate-from-pair")


def test_compact_list_bulk_actions_and_deleting_a_half(page, screenshot, library):
    workspace, high, low = library
    LoRAPair.objects.create(workspace=workspace, name="golden_hour", high=high, low=low)
    page.goto(f"/w/{workspace.slug}/loras/?ordering=name")
    page.get_by_role("link", name="Compact list").click()
    expect(page.locator("#lora-grid")).to_have_class("lora-grid lora-list")
    visible = page.evaluate(
        "() => [...document.querySelectorAll('#lora-grid .lora-card')]"
        ".filter(card => card.getBoundingClientRect().bottom <= window.innerHeight).length"
    )
    screenshot("library-compact")
    assert visible >= 20, visible
    page.goto(f"/w/{workspace.slug}/loras/")  # remembered
    expect(page.locator("#lora-grid")).to_have_class("lora-grid lora-list")

    # Bulk tag everything on the page.
    bar = page.get_by_role("form", name="Bulk actions")
    bar.get_by_label("Select all on this page").check()
    expect(bar).to_contain_text("23 selected")
    bar.get_by_label("Action").select_option("tag")
    bar.get_by_label("Tags").fill("batch")
    screenshot("library-bulk")
    bar.get_by_role("button", name="Apply to selected").click()
    expect(page.get_by_text("Add tags: 24 LoRAs changed.")).to_be_visible()  # the pair card holds two
    assert all("batch" in tags for tags in LoRA.objects.values_list("tags", flat=True))

    # Bulk delete two, after one confirmation.
    bar = page.get_by_role("form", name="Bulk actions")
    page.get_by_label("Select style_00_cinematic_lighting_v2").check()
    page.get_by_label("Select style_01_cinematic_lighting_v2").check()
    bar.get_by_label("Action").select_option("delete")
    expect(bar.get_by_label("Tags")).to_be_hidden()
    bar.get_by_role("button", name="Apply to selected").click()
    expect(page.get_by_role("heading", name="Delete 2 LoRAs?")).to_be_visible()
    screenshot("library-bulk-delete")
    page.get_by_role("button", name="Delete 2 LoRAs").click()
    expect(page.get_by_text("2 LoRAs deleted.")).to_be_visible()
    assert LoRA.objects.alive().count() == 22

    # Deleting one half asks what to do with the pair.
    page.goto(f"/w/{workspace.slug}/loras/{low.id}/")
    page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("It is a half of the pair “golden_hour”")
    screenshot("lora-delete-half")
    dialog.get_by_role("button", name="Delete this half and unpair").click()
    expect(page.get_by_text("and the pair “golden_hour” unpaired")).to_be_visible()
    assert not LoRAPair.objects.exists()
    assert LoRA.objects.alive().filter(id=high.id).exists() and not LoRA.objects.alive().filter(id=low.id).exists()


@pytest.mark.slow
def test_generate_picks_a_pair_and_uploads_in_place(page, screenshot, library, celery_worker, tmp_path):
    workspace, high, low = library
    LoRAPair.objects.create(workspace=workspace, name="golden_hour", high=high, low=low, weight_low=0.7)
    page.goto(f"/w/{workspace.slug}/generate/?model=wan22-a14b-demo")
    page.get_by_role("button", name="+ Add high-noise LoRA").click()
    dialog = page.locator("#lora-dialog")
    pair_option = dialog.get_by_role("button", name="golden_hour pair")
    expect(pair_option).to_contain_text("Low noise: golden_hour_low_noise · weight 0.70")
    screenshot("generate-pair-picker")
    pair_option.click()
    expect(dialog).to_be_hidden()
    for expert, lora, weight in (("high", high, "1.00"), ("low", low, "0.70")):
        row = page.locator(f'.lora-section[data-expert="{expert}"] .lora-row[data-lora-id="{lora.id}"]')
        expect(row.locator(".lora-weight-exact")).to_have_value(weight)
    expect(page.locator("[data-lora-count]")).to_have_text("2")

    # "Manage / upload": the upload dialog opens in place; the new LoRA joins the picker when ready.
    page.get_by_role("button", name="upload LoRAs").click()
    uploader = page.get_by_role("dialog", name="Upload LoRAs")
    expect(uploader).to_be_visible()
    path = write_lora(tmp_path / "fresh_style.safetensors", family="wan-demo", blocks=1)
    uploader.locator('input[type="file"]').set_input_files(path)
    expect(uploader.locator(".upload-item")).to_have_attribute("data-state", "ready", timeout=90_000)
    screenshot("generate-upload-in-place")
    uploader.get_by_role("button", name="Close").last.click()
    fresh = LoRA.objects.get(original_filename="fresh_style.safetensors")
    expect(page.locator(f'#lora-dialog .lora-option[data-lora-id="{fresh.id}"]')).to_be_attached()
    # The picked rows survived the picker's refresh.
    expect(page.locator("[data-lora-count]")).to_have_text("2")
