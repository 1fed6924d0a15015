"""A sweep in a real Chromium: from the LoRA page's "Sweep" button, the cost shown before starting, then the grid
filling in live as cells finish (outputs written as the worker would), the contact sheet link at the end, and a
cell rated in the grid."""

import re
from io import BytesIO

import pytest
from django.utils import timezone
from PIL import Image
from playwright.sync_api import expect

from generation.models import GenerationJob, JobStatus, OutputRating, Sweep, SweepCell
from generation.thumbnails import thumbnail_bytes
from lorasite.object_store import get_object_store
from tests.factories import LoRAFactory, MembershipFactory
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def finish(cell: SweepCell, color: tuple[int, int, int]) -> None:
    """What the worker leaves behind: an output, its thumbnail, the job succeeded."""
    store = get_object_store()
    prefix = f"workspaces/{cell.job.workspace_id}/outputs/{cell.job.id}/"
    image = Image.new("RGB", (48, 32), color)
    out = BytesIO()
    image.save(out, format="PNG")
    store.save_stream(prefix + "output.png", BytesIO(out.getvalue()))
    store.save_stream(prefix + "thumb.webp", BytesIO(thumbnail_bytes(image)))
    GenerationJob.objects.filter(id=cell.job.id).update(
        status=JobStatus.SUCCEEDED,
        progress=100,
        output_key=prefix + "output.png",
        thumb_key=prefix + "thumb.webp",
        finished_at=timezone.now(),
    )


def test_sweep_grid_fills_in(page, sign_in, screenshot, demo_models, monkeypatch):
    # The test finishes the cells itself: no job reaches a worker (the suite's real one may be running).
    monkeypatch.setattr("generation.tasks.generation_run.apply_async", lambda *args, **options: None)
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")
    lora = LoRAFactory(workspace=owner.workspace, name="ink wash", base_model="wan-demo", created_by=owner.user)
    detail = LoRAFactory(workspace=owner.workspace, name="detail", base_model="wan-demo")
    sign_in(owner.user)

    page.goto(f"/w/studio/loras/{lora.id}/")
    page.get_by_role("link", name="Sweep", exact=True).click()
    page.wait_for_url(re.compile(r"/w/studio/sweeps/new/\?lora=\d+$"))
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk, ink wash")
    page.get_by_label("Weights").fill("0, 0.5, 1, 1.5")
    page.get_by_label("Second axis", exact=True).select_option("weight")
    page.get_by_label("Second axis LoRA").select_option(str(detail.id))
    page.get_by_label("Second axis values").fill("0.5, 1")
    page.get_by_role("button", name="Show cost").click()
    expect(page.locator("#sweep-cost")).to_contain_text("This sweep queues 8 jobs")
    screenshot("sweep-new")
    page.get_by_role("button", name="Start sweep").click()
    page.wait_for_url(re.compile(r"/w/studio/sweeps/\d+/$"))
    expect(page.locator("#sweep-progress")).to_have_text("0 of 8 cells finished")
    expect(page.get_by_role("heading", name="ink wash weight × detail weight")).to_be_visible()

    cells = list(SweepCell.objects.select_related("job").order_by("y", "x"))
    for index, cell in enumerate(cells[:5]):
        finish(cell, (40 * index, 120, 255 - 40 * index))
    GenerationJob.objects.filter(id=cells[5].job.id).update(status=JobStatus.RUNNING, progress=40)
    expect(page.locator("#sweep-progress")).to_have_text("5 of 8 cells finished", timeout=10_000)
    expect(page.locator(".sweep-cell img")).to_have_count(5)
    expect(page.locator(".sweep-cell.status-running")).to_contain_text("40%")
    screenshot("sweep-grid-filling")

    for index, cell in enumerate(cells[5:]):
        finish(cell, (200, 40 * index, 80))
    expect(page.locator("#sweep-progress")).to_have_text("8 of 8 cells finished", timeout=10_000)
    expect(page.get_by_role("link", name="Contact sheet (PNG)")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel the sweep")).to_have_count(0)
    screenshot("sweep-grid-done")
    # A cell is an ordinary job: it is rated right in the grid.
    first = page.locator(f'.sweep-cell[data-cell="{cells[0].x},{cells[0].y}"]')
    first.get_by_role("button", name="4 stars").click()
    expect(first.locator(".rating-summary")).to_have_text("4.0 ★ · 1 rating")
    assert OutputRating.objects.get(job=cells[0].job).stars == 4
    screenshot("sweep-grid-rated")
    with page.expect_response(lambda r: "contact-sheet" in r.url or r.url.endswith(".png")):
        page.get_by_role("link", name="Contact sheet (PNG)").click()
    assert Sweep.objects.get().sheet_key
