"""The Generate page's expert controls in a real Chromium: a LoRA on both experts with a weight each, the
section pickers' order, the warning for a LoRA in the other expert's section, trigger words into the prompt,
and the job page that follows (both weights, no stale flash)."""

import re

import pytest
from playwright.sync_api import expect

from generation.models import GenerationJob, JobLoRA
from loras import services as lora_services
from loras.models import LoRA
from tests.factories import MembershipFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def ingest(membership, tmp_path, name: str, *, seed: int, family: str = "wan-demo", **fields) -> LoRA:
    path = write_lora(tmp_path / f"{name}.safetensors", family=family, blocks=2, std=0.3, seed=seed)
    lora = ingest_ready(actor=membership, path=path, options=lora_services.LoRAOptions(name=name))
    LoRA.objects.filter(id=lora.id).update(**fields)
    return lora


def option_names(dialog) -> list[str]:
    return [name.strip() for name in dialog.locator(".lora-option:visible .option-name").all_inner_texts()]


def test_a_weight_per_expert_warnings_and_trigger_words(page, sign_in, screenshot, demo_models, tmp_path):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")
    # Created oldest first: the picker lists the newest first, so "detail" (low) leads until a section reorders it.
    motion = ingest(owner, tmp_path, "motion", seed=1, expert="high")
    pair = ingest(owner, tmp_path, "pastel", seed=2, expert="both", trigger_words=["ohwx", "pastel look"])
    detail = ingest(owner, tmp_path, "detail", seed=3, expert="low")
    sign_in(owner.user)

    page.goto("/w/studio/generate/?model=wan22-a14b-demo")
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")

    # The high-noise picker: high and both LoRAs first; the low-noise one after them.
    page.get_by_role("button", name="+ Add high-noise LoRA").click()
    dialog = page.get_by_role("dialog", name="Add a high-noise LoRA")
    expect(dialog).to_be_visible()
    assert [name.split(" v")[0] for name in option_names(dialog)] == ["pastel", "motion", "detail"]
    screenshot("generate-experts-picker")

    # "Both experts" puts the LoRA into both sections at its preferred weight; it counts once.
    dialog.locator(".lora-option-item", has_text="pastel").get_by_role("button", name="Both experts").click()
    expect(dialog).to_be_hidden()
    high = page.get_by_role("group", name="High-noise")
    low = page.get_by_role("group", name="Low-noise")
    expect(high.locator(".lora-row", has_text="pastel")).to_have_count(1)
    expect(low.locator(".lora-row", has_text="pastel")).to_have_count(1)
    expect(page.locator(".lora-count")).to_have_text("1 of 5 LoRAs")
    low.get_by_role("spinbutton", name="Exact weight of pastel").fill("0.5")

    # The low-noise picker: low and both first; "pastel" is in both sections already.
    page.get_by_role("button", name="+ Add low-noise LoRA").click()
    dialog = page.get_by_role("dialog", name="Add a low-noise LoRA")
    assert [name.split(" v")[0] for name in option_names(dialog)] == ["detail", "pastel", "motion"]
    expect(dialog.locator(".lora-option", has_text="pastel")).to_be_disabled()
    dialog.get_by_role("button", name="Close").click()

    # A low-noise LoRA in High-noise: a visible warning, and the job still runs.
    page.get_by_role("button", name="+ Add high-noise LoRA").click()
    dialog = page.get_by_role("dialog", name="Add a high-noise LoRA")
    expect(dialog.locator(".lora-option", has_text="pastel")).to_be_disabled()
    dialog.locator(".lora-option", has_text="detail").click()
    warning = high.locator(".lora-row", has_text="detail").locator("[data-fill=warning]")
    expect(warning).to_be_visible()
    expect(warning).to_have_text("'detail' is marked as a low-noise LoRA; in High-noise it may not work as intended.")
    expect(page.locator(".lora-count")).to_have_text("2 of 5 LoRAs")

    # Trigger words go into the prompt once, however often the button is pressed.
    insert = high.get_by_role("button", name="Insert trigger words of pastel")
    expect(high.locator(".lora-row", has_text="motion")).to_have_count(0)
    insert.click()
    prompt = page.get_by_label("Prompt", exact=True)
    expect(prompt).to_have_value("a lighthouse at dusk, ohwx, pastel look")
    insert.click()
    expect(prompt).to_have_value("a lighthouse at dusk, ohwx, pastel look")
    # At the cursor: after "a lighthouse", with "pastel look" already there only "ohwx" would be added.
    prompt.fill("a lighthouse at dusk, pastel look")
    prompt.evaluate("(el) => el.setSelectionRange(12, 12)")
    insert.click()
    expect(prompt).to_have_value("a lighthouse, ohwx, at dusk, pastel look")
    screenshot("generate-experts")

    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_url(re.compile(r"/w/studio/jobs/[0-9a-f-]{36}/$"))
    job = GenerationJob.objects.get()
    assert job.prompt == "a lighthouse, ohwx, at dusk, pastel look"
    assert list(JobLoRA.objects.filter(job=job).values_list("lora_id", "expert", "weight", "weight_low")) == [
        (pair.id, "both", 1.0, 0.5),
        (detail.id, "high", 1.0, None),
    ]
    assert motion.id not in JobLoRA.objects.values_list("lora_id", flat=True)
    # The job page: both weights, and the job's live state (queued, or further along when the suite's worker
    # runs) rather than a "Job queued." flash that would outlive it.
    expect(page.locator(".job-inputs")).to_contain_text("high 1.00 · low 0.50")
    expect(page.locator(".job-status .badge")).to_have_text(re.compile("Queued|Running|Succeeded"))
    expect(page.locator(".messages")).to_have_count(0)
    screenshot("job-experts")


def test_recommended_settings_in_one_click(page, sign_in, screenshot, demo_models, tmp_path):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")
    ingest(
        owner, tmp_path, "lightx2v 2steps", seed=4, is_distill=True, recommended_settings={"steps": 2, "guidance": 1.0}
    )
    sign_in(owner.user)
    page.goto("/w/studio/generate/?model=wan22-a14b-demo")
    page.get_by_role("button", name="+ Add high-noise LoRA").click()
    page.get_by_role("dialog", name="Add a high-noise LoRA").locator(".lora-option", has_text="lightx2v").click()

    # The model's defaults (4 steps, guidance 4) contradict the LoRA's settings: the row says so.
    row = page.locator(".lora-row", has_text="lightx2v")
    conflict = row.locator("[data-recommended-conflict]")
    expect(conflict).to_have_text(
        "The form differs from these recommended settings: Steps 4, Guidance (high noise) 4.0."
    )
    screenshot("generate-recommended")
    row.get_by_role("button", name=re.compile(r"Use recommended settings \(2 steps, guidance 1\)")).click()
    expect(page.locator("#id_steps")).to_have_value("2")
    expect(page.locator("#id_guidance")).to_have_value("1")
    expect(conflict).to_be_hidden()
    # Changing a parameter again brings the warning back.
    page.locator("#id_steps").fill("6")
    expect(conflict).to_have_text("The form differs from these recommended settings: Steps 6.")
