"""Evaluation in a real Chromium: a viewer rates an output on the job page and on the jobs list (stars, change,
clear); the LoRA page's metrics against the base model with its histogram, the Versions part, the Configuration tab
(grouped, tooltips on focus, Not set) and the training record edited from the Training record tab."""

import re

import pytest
from playwright.sync_api import expect

from generation.models import OutputRating
from tests.factories import GenerationJobFactory, JobLoRAFactory, LoRAFactory, MembershipFactory, OutputRatingFactory
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def studio():
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Ink studio", workspace__slug="ink-studio")
    workspace = owner.workspace
    viewer = MembershipFactory(role=Role.VIEWER, workspace=workspace).user
    first = LoRAFactory(
        workspace=workspace,
        created_by=owner.user,
        name="Ink wash",
        version="1",
        base_model="wan-demo",
        training_metadata={"epochs": 8, "steps": 1600, "learning_rate": 0.0001, "train_images": 40},
    )
    ink = LoRAFactory(
        workspace=workspace,
        created_by=owner.user,
        name="Ink wash",
        version="2",
        base_model="wan-demo",
        rank=32,
        training_metadata={
            "epochs": 12,
            "steps": 2400,
            "learning_rate": 0.0002,
            "network_dim": 32,
            "network_alpha": 16.0,
            "mixed_precision": "bf16",
            "train_images": 60,
            "resolution": "1280x720",
            "optimizer": "AdamW8bit",
        },
    )
    jobs = []
    for index, stars in enumerate([(5, 4), (4,), (3, 5), ()]):
        job = GenerationJobFactory(
            workspace=workspace, created_by=owner.user, prompt=f"inkwash, a lighthouse on a cliff, take {index}"
        )
        JobLoRAFactory(job=job, lora=ink)
        for value in stars:
            OutputRatingFactory(job=job, stars=value)
        jobs.append(job)
    JobLoRAFactory(job=GenerationJobFactory(workspace=workspace, status="failed"), lora=ink)
    JobLoRAFactory(job=GenerationJobFactory(workspace=workspace), lora=first)
    for stars in (3, 2, 4, 3):
        OutputRatingFactory(job=GenerationJobFactory(workspace=workspace, prompt="a lighthouse, no LoRA"), stars=stars)
    return {"owner": owner.user, "viewer": viewer, "workspace": workspace, "ink": ink, "first": first, "jobs": jobs}


def test_rate_outputs_and_read_the_lora_page(page, sign_in, screenshot, studio):
    workspace, ink, job = studio["workspace"], studio["ink"], studio["jobs"][3]
    sign_in(studio["viewer"])

    # The job page: a viewer rates, changes and clears (htmx swaps the control in place).
    page.goto(f"/w/{workspace.slug}/jobs/{job.id}/")
    stars = page.get_by_role("group", name="Your rating")
    expect(page.locator(f"#rating-{job.id}")).to_contain_text("Not rated yet")
    stars.get_by_role("button", name="4 stars").click()
    expect(page.locator(f"#rating-{job.id}")).to_contain_text("4.0 ★ · 1 rating")
    expect(stars.get_by_role("button", name="4 stars")).to_have_attribute("aria-pressed", "true")
    screenshot("job-rating")
    page.get_by_role("group", name="Your rating").get_by_role("button", name="2 stars").click()
    expect(page.locator(f"#rating-{job.id}")).to_contain_text("2.0 ★ · 1 rating")
    page.locator(f"#rating-{job.id}").get_by_role("button", name="Clear").click()
    expect(page.locator(f"#rating-{job.id}")).to_contain_text("Not rated yet")
    assert not OutputRating.objects.filter(job=job).exists()

    # The jobs list: every succeeded card has the control.
    page.goto(f"/w/{workspace.slug}/jobs/")
    card = page.locator(f"#rating-{studio['jobs'][1].id}")
    expect(card).to_contain_text("4.0 ★ · 1 rating")
    card.get_by_role("button", name="2 stars").click()
    expect(card).to_contain_text("3.0 ★ · 2 ratings")
    screenshot("jobs-rating")

    # The LoRA page: metrics against the base model, the histogram, versions.
    page.goto(f"/w/{workspace.slug}/loras/{ink.id}/")
    metrics = page.get_by_role("region", name="Metrics")
    expect(metrics).to_contain_text("3.8 ★ (6 ratings) vs 3.0 ★ for the base model (4)")
    expect(metrics.get_by_role("img", name=re.compile("Share of ratings per star count"))).to_be_visible()
    versions = page.get_by_role("region", name="Versions")
    expect(versions).to_contain_text("8 epochs · 1,600 steps · LR 1e-4 · 40 images")
    expect(versions.get_by_role("link", name="v1")).to_have_attribute(
        "href", f"/w/{workspace.slug}/loras/{studio['first'].id}/"
    )

    # The Configuration tab: grouped, each name explains itself on focus, missing values say so.
    configuration = page.locator("#lora-configuration")
    for category in ("Model", "LoRA", "Training", "Hardware", "Checkpointing"):
        expect(configuration.get_by_role("heading", name=category, exact=True)).to_be_visible()
    expect(configuration.get_by_role("heading", name="DPO")).to_have_count(0)
    expect(configuration).to_contain_text("2e-4")
    expect(configuration).to_contain_text("Not set")
    label = configuration.locator(".tip", has_text="Learning rate").first
    label.focus()
    expect(page.get_by_role("tooltip").filter(has_text="typically 1e-5 to 1e-3")).to_be_visible()
    screenshot("lora-metrics-configuration")

    # The compare page from the Versions part: the better marked, the test and α stated.
    versions.get_by_role("link", name="Compare versions").click()
    expect(page.get_by_role("heading", name="Compare")).to_be_visible()
    table = page.locator(".compare-table")
    expect(table).to_contain_text("Ink wash v1")
    expect(table).to_contain_text("★ best rated")
    expect(table).to_contain_text("Not enough ratings yet")
    expect(page.get_by_text("α = 0.05")).to_be_visible()
    screenshot("lora-compare")


def test_owner_edits_the_training_record(page, sign_in, screenshot, studio):
    workspace, ink = studio["workspace"], studio["ink"]
    sign_in(studio["owner"])
    page.goto(f"/w/{workspace.slug}/loras/{ink.id}/")
    configuration = page.locator("#lora-configuration")
    configuration.get_by_role("link", name="Training record").click()
    expect(configuration).to_contain_text("No training record yet")
    page.locator("#lora-configuration").get_by_role("link", name="Edit training record").click()
    form = page.locator("#lora-configuration form")
    form.get_by_label("Dataset", exact=True).fill("Ink sketches v3")
    form.get_by_label("Dataset link").fill("notalink")
    form.get_by_label("Hyperparameters").fill("learning_rate: 5e-5\ngradient_checkpointing: yes\nlr: 1")
    form.get_by_role("button", name="Save").click()
    expect(page.locator("#lora-configuration")).to_contain_text("'lr' is not a known parameter")
    page.locator("#lora-configuration").get_by_label("Hyperparameters").fill(
        "learning_rate: 5e-5\ngradient_checkpointing: yes"
    )
    page.locator("#lora-configuration").get_by_role("button", name="Save").click()
    expect(page.locator("#lora-configuration")).to_contain_text("An http:// or https:// link.")
    screenshot("lora-training-record-errors")
    page.locator("#lora-configuration").get_by_label("Dataset link").fill("https://example.com/ink")
    page.locator("#lora-configuration").get_by_role("button", name="Save").click()
    record = page.locator("#lora-configuration")
    expect(record.get_by_role("link", name="https://example.com/ink")).to_be_visible()
    ink.refresh_from_db()
    assert ink.training["hyperparameters"] == {"learning_rate": 5e-05, "gradient_checkpointing": True}

    record.get_by_role("link", name="Configuration", exact=True).click()
    expect(page.locator("#lora-configuration")).to_contain_text("5e-5")  # the record wins over the file's 2e-4
    expect(page.locator("#lora-configuration")).to_contain_text("Yes")
    screenshot("lora-configuration-record")
