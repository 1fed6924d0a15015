"""A blind A/B test in a real Chromium: the quick form pre-filled from two versions, the cost shown, then a
viewer votes pair by pair without names (outputs written as the worker would), and the results with the test
stated; the compare page's A/B part."""

import re
from io import BytesIO

import pytest
from django.utils import timezone
from PIL import Image
from playwright.sync_api import expect

from generation.experiments.abtests import Stack, abtest_create, abvote_set
from generation.experiments.selectors import abpair_get
from generation.models import ABPair, ABVote, GenerationJob, JobStatus
from generation.services import LoRARequest
from lorasite.object_store import get_object_store
from tests.factories import LoRAFactory, MembershipFactory
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def finish(job: GenerationJob, color: tuple[int, int, int]) -> None:
    key = f"workspaces/{job.workspace_id}/outputs/{job.id}/output.png"
    out = BytesIO()
    Image.new("RGB", (48, 32), color).save(out, format="PNG")
    get_object_store().save_stream(key, BytesIO(out.getvalue()))
    # Stills keep the test short: the page shows an image job's output as an image, a video's as a player.
    GenerationJob.objects.filter(id=job.id).update(
        kind="image", status=JobStatus.SUCCEEDED, progress=100, output_key=key, finished_at=timezone.now()
    )


def test_quick_ab_test_and_a_blind_vote(page, sign_in, screenshot, demo_models, monkeypatch):
    # The test finishes the jobs itself: none reaches a worker (the suite's real one may be running).
    monkeypatch.setattr("generation.tasks.generation_run.apply_async", lambda *args, **options: None)
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")
    viewer = MembershipFactory(role=Role.VIEWER, workspace=owner.workspace)
    v1 = LoRAFactory(workspace=owner.workspace, name="ink wash", version="1", base_model="wan-demo")
    v2 = LoRAFactory(workspace=owner.workspace, name="ink wash", version="2", base_model="wan-demo")
    sign_in(owner.user)

    page.goto(f"/w/studio/loras/compare/?ids={v1.id}&ids={v2.id}")
    page.get_by_role("link", name="Quick A/B test").click()
    page.wait_for_url(re.compile(r"/w/studio/abtests/new/\?a=\d+&b=\d+$"))
    expect(page.get_by_label("B", exact=True)).to_have_value(str(v2.id))
    page.get_by_label("Prompts").fill("a lighthouse at dusk\na fox in the snow")
    page.get_by_label("Seeds").fill("1, 2")
    page.get_by_role("button", name="Show cost").click()
    expect(page.locator("#abtest-cost")).to_contain_text("This A/B test queues 8 jobs")
    screenshot("abtest-new")
    page.get_by_role("button", name="Start A/B test").click()
    page.wait_for_url(re.compile(r"/w/studio/abtests/\d+/$"))
    expect(page.get_by_text("0 of 8 jobs finished")).to_be_visible()

    for pair in ABPair.objects.select_related("job_a", "job_b"):
        finish(pair.job_a, (30, 90, 220))  # A: blue
        finish(pair.job_b, (220, 120, 30))  # B: orange
    page.get_by_role("button", name="Sign out").click()
    sign_in(viewer.user)
    page.goto("/w/studio/abtests/")
    page.get_by_role("link", name=re.compile("^Vote")).click()
    expect(page.get_by_role("heading", name="Which is better?")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("ink wash")  # blind
    expect(page.locator("#vote-progress")).to_contain_text("You have voted on 0 of 4 pairs")
    screenshot("abtest-vote")
    for number in range(4):
        # The viewer prefers orange (B), wherever it is shown.
        left = page.get_by_role("img", name="Left output")
        pair_id = int(page.locator('input[name="pair"]').get_attribute("value"))
        pair = ABPair.objects.select_related("job_a").get(id=pair_id)
        src = left.get_attribute("src")
        side = "Left" if str(pair.job_a.id) not in src else "Right"
        page.get_by_role("button", name=f"{side} is better").click()
        expect(page.locator("#vote-progress")).to_contain_text(f"You have voted on {number + 1} of 4 pairs")
    expect(page.get_by_text("You have voted on every ready pair.")).to_be_visible()
    assert set(ABVote.objects.values_list("choice", flat=True)) == {"b"}
    page.get_by_role("link", name="See the results").click()
    results = page.locator(".ab-overall")
    expect(results).to_contain_text("0 %")
    expect(results).to_contain_text("Not enough votes yet")  # 4 decisive votes, under the minimum
    expect(page.get_by_text("Two-sided exact binomial test against 50 %")).to_be_visible()
    screenshot("abtest-results")


def test_results_fill_in_live_and_stop_polling_once_every_job_has_finished(
    page, sign_in, screenshot, demo_models, monkeypatch
):
    monkeypatch.setattr("generation.tasks.generation_run.apply_async", lambda *args, **options: None)
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")
    viewer = MembershipFactory(role=Role.VIEWER, workspace=owner.workspace)
    v1 = LoRAFactory(workspace=owner.workspace, name="ink wash", version="1", base_model="wan-demo")
    v2 = LoRAFactory(workspace=owner.workspace, name="ink wash", version="2", base_model="wan-demo")
    test, _ = abtest_create(
        actor=owner,
        model="wan22-a14b-demo",
        prompts=["a lighthouse at dusk", "a fox in the snow"],
        seeds=[1, 2],
        params={"steps": 2},
        stack_a=Stack(loras=(LoRARequest(lora_id=v1.id, weight=1.0),), label=""),
        stack_b=Stack(loras=(LoRARequest(lora_id=v2.id, weight=1.0),), label=""),
    )
    sign_in(owner.user)
    url = f"/w/studio/abtests/{test.id}/"
    page.goto(url)
    progress = page.locator("#abtest-progress")
    expect(progress).to_have_text("0 of 8 jobs finished · 0 voters")

    # Two pairs finish and the viewer votes on them: the open page shows both without a reload.
    pairs = list(ABPair.objects.filter(test=test).select_related("job_a", "job_b").order_by("id"))
    for pair in pairs[:2]:
        finish(pair.job_a, (30, 90, 220))
        finish(pair.job_b, (220, 120, 30))
        abvote_set(actor=viewer, pair=abpair_get(test=test, pair_id=pair.id), side="tie")  # both now succeeded
    GenerationJob.objects.filter(id=pairs[2].job_a_id).update(status=JobStatus.RUNNING, progress=50)
    expect(progress).to_have_text("4 of 8 jobs finished · 1 voter", timeout=10_000)
    expect(page.locator(".ab-overall td").nth(2)).to_have_text("2")  # the two ties
    expect(page.locator("#abtest-live")).to_have_attribute("hx-trigger", "every 2s")
    screenshot("abtest-results-live")

    for pair in pairs[2:]:
        finish(pair.job_a, (30, 90, 220))
        finish(pair.job_b, (220, 120, 30))
    expect(progress).to_have_text("8 of 8 jobs finished · 1 voter", timeout=10_000)
    expect(page.locator("#abtest-live")).not_to_have_attribute("hx-trigger", re.compile(".*"))
    polls = []
    page.on("request", lambda request: polls.append(request.url) if request.url.endswith(url) else None)
    page.wait_for_timeout(3_000)  # longer than the 2 s poll: none comes once every job has finished
    assert polls == []
    screenshot("abtest-results-done")
