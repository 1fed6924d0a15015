"""Previews in a real Chromium: cards lead with a preview (an uploaded image, a video that plays muted on hover
only, the last job's thumbnail, or the placeholder), the detail page uploads one, and a job page's "Use as
preview" makes its output the card's preview."""

import io

import numpy as np
import pytest
from playwright.sync_api import expect

from generation.models import JobStatus
from generation.runtime.encode import write_mp4
from loras import previews
from tests.factories import MembershipFactory
from tests.test_library_pages import make_lora
from tests.test_previews import make_job, upload
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def gradient_png(width: int, height: int, hue: int) -> bytes:
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 255 // width + hue) % 256, y * 255 // height, np.full_like(x, 160)], axis=-1)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def moving_mp4(tmp_path) -> bytes:
    frames = np.zeros((24, 180, 320, 3), dtype=np.uint8)
    for index, frame in enumerate(frames):
        frame[:, :] = (30, 40, 90)
        frame[60:120, index * 10 : index * 10 + 60] = (250, 180, 40)  # a square crossing the frame
    path = tmp_path / "clip.mp4"
    write_mp4(frames, path, fps=12)
    return path.read_bytes()


@pytest.fixture
def library(tmp_path):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Preview studio", workspace__slug="preview-studio")
    workspace, user = owner.workspace, owner.user
    pictured = make_lora(workspace, user, name="Sunset palette", base_model="wan-demo", trigger_words=["sunset"])
    previews.lora_preview_upload(actor=owner, lora=pictured, uploaded_file=upload(gradient_png(640, 400, 0)))
    moving = make_lora(workspace, user, name="Motion blur", base_model="wan-demo", expert="high")
    previews.lora_preview_upload(
        actor=owner, lora=moving, uploaded_file=upload(moving_mp4(tmp_path), "clip.mp4", "video/mp4")
    )
    used = make_lora(workspace, user, name="Used in a job", base_model="wan-demo", expert="low")
    job = make_job(workspace, used)
    make_lora(workspace, user, name="Fresh upload", base_model="flux")
    return {"owner": owner, "workspace": workspace, "moving": moving, "used": used, "job": job}


def test_cards_lead_with_previews_and_videos_play_on_hover_only(page, sign_in, screenshot, library):
    sign_in(library["owner"].user)
    page.goto(f"/w/{library['workspace'].slug}/loras/")
    cards = page.locator(".lora-card")
    expect(cards).to_have_count(4)
    expect(page.locator('[data-preview-source="upload"] img')).to_be_visible()
    expect(page.locator('[data-preview-source="fallback"] img')).to_be_visible()
    expect(page.locator(".lora-preview.empty")).to_have_count(1)
    for image in page.locator(".lora-preview img").all():
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    video = page.locator(".lora-preview video")
    expect(video).to_have_attribute("preload", "none")
    assert video.evaluate("v => v.paused && v.muted && v.networkState !== v.NETWORK_LOADING && !v.autoplay")
    screenshot("previews-library")

    page.locator(f"#lora-{library['moving'].id}").hover()
    page.wait_for_function("document.querySelector('.lora-preview video').currentTime > 0.2", timeout=20_000)
    assert video.evaluate("v => !v.paused && v.muted")
    screenshot("previews-library-hover")
    page.mouse.move(5, 5)
    page.wait_for_function("document.querySelector('.lora-preview video').paused")


def test_detail_upload_and_use_as_preview_from_a_job(page, sign_in, screenshot, library):
    sign_in(library["owner"].user)
    used, job, slug = library["used"], library["job"], library["workspace"].slug
    page.goto(f"/w/{slug}/loras/{used.id}/")
    section = page.locator("#preview")
    expect(section).to_contain_text("No preview chosen: the card shows the latest output")
    page.get_by_label("Preview image or video").set_input_files(
        files=[{"name": "p.png", "mimeType": "image/png", "buffer": gradient_png(800, 500, 120)}]
    )
    page.get_by_role("button", name="Upload preview").click()
    expect(page.get_by_text("Preview saved.")).to_be_visible()
    expect(section).to_contain_text("Uploaded preview.")
    screenshot("previews-detail")

    page.get_by_label("Preview image or video").set_input_files(
        files=[{"name": "x.txt", "mimeType": "text/plain", "buffer": b"not an image"}]
    )
    page.get_by_role("button", name="Replace preview").click()
    expect(page.get_by_text("The preview was not changed: This is not a PNG, JPEG or WebP image")).to_be_visible()

    assert job.status == JobStatus.SUCCEEDED
    page.goto(f"/w/{slug}/jobs/{job.id}/")
    page.get_by_role("button", name="Use as preview for Used in a job").click()
    expect(page.get_by_text("This output is now the preview of “Used in a job”.")).to_be_visible()
    expect(page.get_by_role("button", name="Already the preview of Used in a job")).to_be_disabled()
    screenshot("previews-job")
    page.goto(f"/w/{slug}/loras/{used.id}/")
    expect(page.locator("#preview")).to_contain_text(f"From job {str(job.id)[:8]}")
