"""Recipes in a real Chromium: save one from a finished job, edit it, apply it to fill the Generate page, see it
refuse to apply once its LoRA is deleted; and edit a LoRA's trigger words inline on its page."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from generation.models import GenerationJob, JobLoRA, JobStatus, Recipe
from loras import services as lora_services
from loras.models import LoRA
from tests.factories import MembershipFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAN = "wan22-a14b-demo"


def ingest(membership, tmp_path, name: str, *, seed: int, **fields) -> LoRA:
    path = write_lora(tmp_path / f"{name}.safetensors", family="wan-demo", blocks=1, seed=seed)
    lora = ingest_ready(actor=membership, path=path, options=lora_services.LoRAOptions(name=name))
    LoRA.objects.filter(id=lora.id).update(**fields)
    lora.refresh_from_db()
    return lora


def finished_job(membership, lora: LoRA) -> GenerationJob:
    """A succeeded job as the worker leaves it (no worker needed to save a recipe from it)."""
    job = GenerationJob.objects.create(
        workspace=membership.workspace,
        created_by=membership.user,
        model_key=WAN,
        model_name="Wan 2.2 A14B (demo)",
        kind="video",
        prompt="a lighthouse at dusk",
        params={
            "width": 48,
            "height": 32,
            "steps": 3,
            "guidance": 2.0,
            "guidance_2": 1.5,
            "num_frames": 5,
            "fps": 8,
            "seed": 1234,
        },
        status=JobStatus.SUCCEEDED,
        finished_at=timezone.now(),
    )
    JobLoRA.objects.create(
        job=job,
        lora=lora,
        position=0,
        lora_ref=lora.id,
        name=lora.name,
        version=lora.version,
        sha256=lora.sha256,
        file_key=lora.file.name,
        file_size=lora.file_size,
        weight=0.8,
        weight_low=0.5,
        expert="both",
    )
    return job


def test_save_from_a_job_edit_apply_and_a_deleted_lora(page, sign_in, screenshot, tmp_path, demo_models):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")
    style = ingest(owner, tmp_path, "style", seed=1, trigger_words=["ohwx", "ink wash"])
    job = finished_job(owner, style)
    sign_in(owner.user)

    page.goto(f"/w/studio/jobs/{job.id}/")
    page.get_by_role("button", name="Save as recipe").click()
    page.wait_for_url(re.compile(r"/w/studio/recipes/\d+/$"))
    expect(page.get_by_role("status").or_(page.locator(".message.success"))).to_contain_text("Saved as recipe")
    recipe = Recipe.objects.get()
    assert recipe.params["seed"] == 1234 and recipe.recipe_loras.get().weight_low == 0.5

    # Rename it and put the trigger words into the prompt.
    page.get_by_label("Name").fill("Lighthouse")
    page.get_by_label("Prompt template").fill("{trigger}, a lighthouse at dusk")
    page.get_by_role("button", name="Save recipe").click()
    expect(page.locator("[data-recipe-prompt]")).to_have_text("ohwx, ink wash, a lighthouse at dusk")
    expect(page.get_by_role("heading", name="Lighthouse", level=1)).to_be_visible()
    screenshot("recipe-detail")

    # The list, then Apply: the Generate page is filled from the recipe.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Recipes").click()
    expect(page.get_by_role("heading", name="Lighthouse")).to_be_visible()
    screenshot("recipes")
    page.get_by_role("link", name="Apply Lighthouse").click()
    page.wait_for_url(re.compile(r"/w/studio/generate/\?recipe=\d+$"))
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("ohwx, ink wash, a lighthouse at dusk")
    expect(page.get_by_role("spinbutton", name="Steps")).to_have_value("3")
    # The "both" LoRA sits in each section with its own weight.
    expect(page.get_by_role("group", name="High-noise").get_by_role("slider", name="Weight of style")).to_have_value(
        "0.8"
    )
    expect(page.get_by_role("group", name="Low-noise").get_by_role("slider", name="Weight of style")).to_have_value(
        "0.5"
    )
    screenshot("generate-from-recipe")

    # The LoRA is deleted: the recipe says so and Apply is refused until the recipe is fixed.
    LoRA.objects.filter(id=style.id).update(deleted_at=timezone.now())
    page.goto("/w/studio/recipes/")
    card = page.locator(".recipe-card", has_text="Lighthouse")
    expect(card).to_contain_text("LoRA 'style' has been deleted")
    expect(card.get_by_text("Deleted LoRA")).to_be_visible()
    expect(card.get_by_role("link", name=re.compile("^Apply"))).to_have_count(0)
    screenshot("recipes-deleted-lora")
    page.goto(f"/w/studio/recipes/{recipe.id}/apply/")
    expect(page.get_by_role("alert").first).to_contain_text("cannot run until it is fixed")
    # Fixed by removing the LoRA from it.
    page.get_by_label("Remove style from the recipe").check()
    page.get_by_role("button", name="Save recipe").click()
    expect(page.get_by_role("link", name="Apply")).to_be_visible()


def test_edit_trigger_words_inline(page, sign_in, screenshot, tmp_path):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Studio", workspace__slug="studio")
    lora = ingest(owner, tmp_path, "wan22_lightx2v_4steps", seed=2)
    sign_in(owner.user)
    page.goto(f"/w/studio/loras/{lora.id}/")
    # Proposed at ingest from the name: a distill LoRA with its steps and guidance.
    recommended = page.locator("#lora-recommended")
    expect(recommended).to_contain_text("4 steps, guidance 1, guidance 2 1")
    expect(recommended).to_contain_text("Distill")

    triggers = page.locator("#lora-triggers")
    triggers.get_by_role("link", name="Edit trigger words").click()
    field = page.get_by_role("textbox", name="Trigger words")
    expect(field).to_be_focused()
    field.fill("ohwx, " + "x" * 70)
    field.press("Enter")
    expect(triggers.get_by_role("alert")).to_contain_text("too long")
    screenshot("lora-trigger-words-error")
    field = page.get_by_role("textbox", name="Trigger words")
    field.fill("ohwx, red scarf")
    field.press("Enter")
    expect(triggers.get_by_role("status")).to_have_text("Trigger words saved.")
    expect(triggers.get_by_role("button", name="Copy “red scarf”")).to_be_visible()
    lora.refresh_from_db()
    assert lora.trigger_words == ["ohwx", "red scarf"]
    # Escape leaves the editor unchanged.
    triggers.get_by_role("link", name="Edit trigger words").click()
    field = page.get_by_role("textbox", name="Trigger words")
    expect(field).to_be_focused()  # htmx has settled the editor (and bound its Escape) once it has focused it
    field.press("Escape")
    expect(triggers.get_by_role("button", name="Copy “ohwx”")).to_be_visible()

    # Recommended settings: a value the model cannot run is refused in place.
    recommended.get_by_role("link", name="Edit recommended settings").click()
    page.get_by_role("spinbutton", name="Steps", exact=True).fill("40")
    page.get_by_role("button", name="Save settings").click()
    expect(recommended.get_by_role("alert")).to_contain_text("steps must be a whole number from 1 to 10")
    page.get_by_role("spinbutton", name="Steps", exact=True).fill("6")
    page.get_by_role("button", name="Save settings").click()
    expect(recommended).to_contain_text("6 steps, guidance 1")
    screenshot("lora-trigger-words")
