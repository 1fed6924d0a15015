"""The Generate page's input image for image-to-video in a real Chromium: a bad file's reason shown, a good one
uploaded and previewed with each fit on the canvas, the job queued with it, and the job page and jobs list showing
the input beside the output."""

import io

import pytest
from PIL import Image
from playwright.sync_api import expect

from generation.models import GenerationJob
from tests.factories import MembershipFactory
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wide_png() -> bytes:
    """80×40: blue left half, orange right half; in a square frame "fit" leaves black bars above and below."""
    image = Image.new("RGB", (80, 40), (240, 140, 30))
    image.paste((30, 60, 220), (0, 0, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def canvas_pixel(page, x: int, y: int) -> list[int]:
    return page.evaluate(
        "([x, y]) => Array.from(document.querySelector('[data-input-image] canvas')"
        ".getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3))",
        [x, y],
    )


def test_input_image_upload_preview_and_job(page, sign_in, screenshot, demo_models):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")
    sign_in(owner.user)
    page.goto("/w/studio/generate/?model=wan22-i2v-a14b-demo")
    section = page.get_by_role("region", name="Input image")
    expect(section).to_be_visible()
    page.get_by_label("Prompt", exact=True).fill("the lighthouse starts to glow")
    page.get_by_label("Resolution").select_option("32x32")

    chooser = page.locator("#input-image-file")
    chooser.set_input_files({"name": "notes.png", "mimeType": "image/png", "buffer": b"just some text"})
    expect(section.get_by_role("alert")).to_contain_text("not an image")

    chooser.set_input_files({"name": "lighthouse.png", "mimeType": "image/png", "buffer": wide_png()})
    expect(section.locator("[data-input-caption]")).to_have_text("lighthouse.png: 80 × 40, uploaded.")
    expect(section.get_by_role("alert")).to_be_hidden()
    # The default fit (center-crop) covers the square frame; "fit" letterboxes it; "fill" stretches it.
    assert canvas_pixel(page, 160, 4) != [0, 0, 0]
    section.get_by_label("fit", exact=True).check()
    assert canvas_pixel(page, 160, 4) == [0, 0, 0]
    screenshot("generate-i2v")
    section.get_by_label("fill", exact=True).check()
    assert canvas_pixel(page, 160, 4) != [0, 0, 0]
    section.get_by_label("center-crop", exact=True).check()

    page.get_by_role("button", name="Generate").click()
    page.wait_for_url("**/jobs/*/")
    job = GenerationJob.objects.get()
    assert job.input is not None and job.params["image_fit"] == "center-crop"
    expect(page.get_by_role("img", name="Input image of: the lighthouse starts to glow")).to_be_visible()
    screenshot("job-i2v")

    page.goto("/w/studio/jobs/")
    expect(page.get_by_role("img", name="Input image of: the lighthouse starts to glow")).to_be_visible()
    screenshot("jobs-i2v")
