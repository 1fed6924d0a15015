"""Generate → job → output in a real Chromium, with a real Celery worker running the demo Wan 2.2
pipeline: one LoRA per expert with weights set on the sliders, live progress, a playable video."""

import re

import pytest
from playwright.sync_api import expect

from generation.models import GenerationJob, JobLoRA
from loras import services as lora_services
from tests.factories import MembershipFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def ingest(membership, tmp_path, name: str, *, family: str = "wan-demo", seed: int):
    path = write_lora(tmp_path / f"{name}.safetensors", family=family, blocks=2, std=0.3, seed=seed)
    return ingest_ready(actor=membership, path=path, options=lora_services.LoRAOptions(name=name))


def test_generate_with_a_lora_per_expert_and_watch_it_run(page, sign_in, screenshot, celery_worker, tmp_path):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")
    style, detail = ingest(owner, tmp_path, "style", seed=1), ingest(owner, tmp_path, "detail", seed=2)
    ingest(owner, tmp_path, "portrait", family="flux-demo", seed=3)
    sign_in(owner.user)

    page.goto("/w/studio/generate/?model=wan22-a14b-demo")
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")

    # A single-expert model has one list; switching back brings the two expert sections (and keeps the prompt).
    page.get_by_role("radio", name=re.compile("Wan single expert")).check()
    expect(page.locator(".lora-section")).to_have_count(1)
    page.get_by_role("radio", name=re.compile("Wan 2.2 A14B")).check()
    expect(page.get_by_role("group", name="High-noise")).to_be_visible()
    expect(page.get_by_role("group", name="Low-noise")).to_be_visible()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a lighthouse at dusk")

    # High noise: search, pick, then move the slider with the keyboard (preferred weight 1.00 → 0.95).
    page.get_by_role("button", name="+ Add high-noise LoRA").click()
    dialog = page.get_by_role("dialog", name="Add a high-noise LoRA")
    expect(dialog).to_be_visible()
    portrait = dialog.locator(".lora-option", has_text="portrait")
    expect(portrait).to_be_disabled()
    expect(portrait).to_contain_text("Requires FLUX (demo)")
    screenshot("generate-picker")
    dialog.get_by_label("Search").fill("sty")
    expect(dialog.locator(".lora-option", has_text="detail")).to_be_hidden()
    dialog.locator(".lora-option", has_text="style").click()
    expect(dialog).to_be_hidden()
    high_slider = page.get_by_role("slider", name="Weight of style")
    expect(high_slider).to_be_focused()
    for _ in range(5):
        high_slider.press("ArrowLeft")
    expect(page.get_by_role("spinbutton", name="Exact weight of style")).to_have_value("0.95")

    # Low noise: the LoRA already in high noise could join it here (both experts, a weight each); type an exact
    # weight, the slider follows.
    page.get_by_role("button", name="+ Add low-noise LoRA").click()
    dialog = page.get_by_role("dialog", name="Add a low-noise LoRA")
    expect(dialog.locator(".lora-option", has_text="style")).to_contain_text("In High-noise: adding it here runs it")
    dialog.locator(".lora-option", has_text="detail").click()
    page.get_by_role("spinbutton", name="Exact weight of detail").fill("0.6")
    expect(page.get_by_role("slider", name="Weight of detail")).to_have_value("0.6")
    expect(page.locator(".lora-count")).to_have_text("2 of 5 LoRAs")
    screenshot("generate")

    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_url(re.compile(r"/w/studio/jobs/[0-9a-f-]{36}/$"))
    job = GenerationJob.objects.get()
    assert list(JobLoRA.objects.filter(job=job).values_list("lora_id", "weight", "expert")) == [
        (style.id, 0.95, "high"),
        (detail.id, 0.6, "low"),
    ]

    # The job page polls until the worker has finished, then shows the player.
    expect(page.locator(".job-status .badge")).to_have_text("Succeeded", timeout=120_000)
    video = page.locator(".job-output video")
    expect(video).to_have_attribute("src", re.compile(r"output\.mp4"))
    page.wait_for_function("document.querySelector('.job-output video').readyState >= 3", timeout=20_000)  # playable
    assert page.evaluate("document.querySelector('.job-output video').duration") > 0
    expect(page.get_by_role("row", name=re.compile("Inference"))).to_be_visible()
    expect(page.locator(".job-inputs")).to_contain_text("High noise")
    expect(page.locator("#live-status")).to_have_text("Job succeeded.")
    screenshot("job-detail")

    page.get_by_role("link", name="Jobs", exact=True).first.click()
    card = page.locator(".job-card").first
    expect(card).to_contain_text("a lighthouse at dusk")
    expect(card.locator(".badge.status")).to_have_text("Succeeded")
    expect(card.locator("video")).to_have_attribute("poster", re.compile(r"poster\.png"))
    expect(page.locator("#job-list")).not_to_have_attribute("hx-trigger", re.compile("every"))
    screenshot("jobs")
