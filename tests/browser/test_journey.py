"""The one journey of the issue, in a real Chromium against a live server and a real Celery worker:
sign in → upload two LoRAs through the dialog (progress bars, cards, processing → ready) → rename
one inline → Generate on the Wan 2.2 demo model with one LoRA in High-noise and one in Low-noise
with weights → the job reaches done → the video element has a playable source."""

import re

import pytest
from playwright.sync_api import expect

from generation.models import JobLoRA
from loras.models import LoRA, Status
from tests.factories import MembershipFactory
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_upload_rename_generate_and_watch(page, sign_in, celery_worker, tmp_path):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Journey", workspace__slug="journey")
    files = [
        write_lora(
            tmp_path / "sunset_style_high_noise.safetensors", family="wan-demo", blocks=2, std=0.3, seed=1, rank=512
        ),
        write_lora(
            tmp_path / "film_grain_low_noise.safetensors", family="wan-demo", blocks=2, std=0.3, seed=2, rank=512
        ),
    ]

    sign_in(owner.user)
    page.get_by_role("link", name="Journey", exact=True).click()
    expect(page.get_by_role("heading", name="LoRA library")).to_be_visible()

    page.get_by_role("button", name="Upload LoRAs").click()
    dialog = page.get_by_role("dialog", name="Upload LoRAs")
    dialog.locator('input[type="file"]').set_input_files(files)
    for path in files:
        row = dialog.locator(".upload-item").filter(has_text=path.name)
        expect(row.locator("progress")).to_be_visible()
        expect(row).to_have_attribute("data-state", "ready", timeout=90_000)
    page.keyboard.press("Escape")
    high, low = (LoRA.objects.get(original_filename=path.name) for path in files)
    assert (high.status, high.expert, low.status, low.expert) == (Status.READY, "high", Status.READY, "low")
    expect(page.locator(f"#lora-{high.id}")).to_have_attribute("data-status", "ready")
    expect(page.locator(f"#lora-{low.id}")).to_have_attribute("data-status", "ready")

    page.locator(f"#lora-{high.id}").get_by_role("link", name="sunset_style_high_noise").click()
    page.get_by_role("link", name=re.compile("^Rename")).click()
    page.get_by_label("Name", exact=True).fill("Sunset style")
    page.get_by_label("Name", exact=True).press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sunset style")

    page.get_by_role("link", name="Generate", exact=True).click()
    page.get_by_role("radio", name=re.compile("Wan 2.2 A14B")).check()
    page.get_by_label("Prompt", exact=True).fill("a harbour at sunset")
    page.get_by_role("button", name="+ Add high-noise LoRA").click()
    page.get_by_role("dialog", name="Add a high-noise LoRA").locator(".lora-option", has_text="Sunset style").click()
    page.get_by_role("spinbutton", name="Exact weight of Sunset style").fill("0.8")
    page.get_by_role("button", name="+ Add low-noise LoRA").click()
    page.get_by_role("dialog", name="Add a low-noise LoRA").locator(
        ".lora-option", has_text="film_grain_low_noise"
    ).click()
    page.get_by_role("spinbutton", name="Exact weight of film_grain_low_noise").fill("0.5")
    expect(page.locator(".lora-count")).to_have_text("2 of 5 LoRAs")
    page.get_by_role("button", name="Generate", exact=True).click()

    page.wait_for_url(re.compile(r"/w/journey/jobs/[0-9a-f-]{36}/$"))
    expect(page.locator(".job-status .badge")).to_have_text("Succeeded", timeout=120_000)
    page.wait_for_function("document.querySelector('.job-output video').readyState >= 3", timeout=20_000)
    assert page.evaluate("document.querySelector('.job-output video').duration") > 0
    assert sorted(JobLoRA.objects.values_list("name", "weight", "expert")) == [
        ("Sunset style", 0.8, "high"),
        ("film_grain_low_noise", 0.5, "low"),
    ]
