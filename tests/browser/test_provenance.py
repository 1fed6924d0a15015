"""Hashes and provenance in a real Chromium: a LoRA's hashes and its "same weights, other metadata" twin on the
detail page, a pasted AutoV2 in the library search, the job page's Provenance part, and "What made this?" reading
an output image back (its LoRAs found by hash, one missing, Open in Generate) and refusing a file that is not one."""

import hashlib
import re

import numpy as np
import pytest
from playwright.sync_api import expect

from generation.models import GenerationJob, JobLoRA, JobStatus
from generation.provenance import job_provenance
from generation.runtime.encode import write_png
from lorasite.object_store import get_object_store
from tests.factories import LoRAFactory, MembershipFactory
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def hashed_lora(workspace, owner, name: str, *, autov3: str = "", **fields):
    sha256 = hashlib.sha256(name.encode()).hexdigest()
    return LoRAFactory(
        workspace=workspace,
        created_by=owner,
        name=name,
        original_filename=f"{name.lower().replace(' ', '_')}.safetensors",
        sha256=sha256,
        autov2=sha256[:10],
        autov3=autov3 or hashlib.sha256(b"weights of " + name.encode()).hexdigest(),
        blake3=hashlib.blake2s(name.encode()).hexdigest(),
        base_model="flux-demo",
        **fields,
    )


@pytest.fixture
def studio(tmp_path):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Ink studio", workspace__slug="ink-studio")
    workspace = owner.workspace
    ink = hashed_lora(workspace, owner.user, "Ink wash", trigger_words=["inkwash"])
    twin = hashed_lora(workspace, owner.user, "Ink wash retagged", autov3=ink.autov3)
    neon = hashed_lora(workspace, owner.user, "Neon glow")
    elsewhere = hashed_lora(workspace, owner.user, "Paper texture")
    job = GenerationJob.objects.create(
        workspace=workspace,
        created_by=owner.user,
        model_key="flux-demo",
        model_name="FLUX (demo)",
        kind="image",
        prompt="inkwash, a lighthouse on a cliff at dusk",
        negative_prompt="blurry",
        params={"width": 64, "height": 64, "steps": 4, "guidance": 3.5, "seed": 1234},
        status=JobStatus.SUCCEEDED,
    )
    for position, (lora, weight) in enumerate([(ink, 0.8), (neon, 0.45), (elsewhere, 0.3)]):
        JobLoRA.objects.create(
            job=job,
            lora=lora,
            position=position,
            lora_ref=lora.id,
            name=lora.name,
            version=lora.version,
            sha256=lora.sha256,
            file_key=lora.file.name,
            file_size=lora.file_size,
            weight=weight,
            expert="both",
        )
    output = tmp_path / "output.png"
    ys, xs = np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 64), indexing="ij")
    write_png(np.stack([ys, xs, 1 - ys], axis=-1), output, provenance=job_provenance(job))
    job.output_key = f"workspaces/{workspace.id}/outputs/{job.id}/output.png"
    job.save(update_fields=["output_key"])
    get_object_store().save_file(job.output_key, output)
    elsewhere.delete()  # the image came from another workspace's library: this one lacks that LoRA
    return {"owner": owner.user, "workspace": workspace, "ink": ink, "twin": twin, "job": job, "output": output}


def test_hashes_provenance_and_what_made_this(page, sign_in, screenshot, studio, demo_models, tmp_path):
    workspace, ink, twin = studio["workspace"], studio["ink"], studio["twin"]
    sign_in(studio["owner"])

    # The detail page: every hash, and the LoRA with the same weights under other metadata.
    page.goto(f"/w/{workspace.slug}/loras/{twin.id}/")
    for label in ("SHA-256", "AutoV2", "AutoV3", "BLAKE3"):
        expect(page.get_by_role("button", name=f"Copy the {label}")).to_be_visible()
    same = page.locator("[data-same-weights]")
    expect(same).to_contain_text("Same weights, other metadata")
    expect(same.get_by_role("link", name=re.compile("Ink wash"))).to_have_attribute(
        "href", f"/w/{workspace.slug}/loras/{ink.id}/"
    )
    screenshot("lora-hashes")

    # A Civitai AutoV2 pasted into the library search finds the file.
    page.goto(f"/w/{workspace.slug}/loras/")
    page.get_by_role("searchbox", name="Search").fill(ink.autov2)
    expect(page.locator("#library-results")).to_contain_text("Ink wash")
    expect(page.locator("#library-results")).not_to_contain_text("Neon glow")
    screenshot("library-hash-search")

    # The job page shows what its output carries.
    page.goto(f"/w/{workspace.slug}/jobs/{studio['job'].id}/")
    provenance = page.get_by_role("region", name="Provenance")
    expect(provenance).to_contain_text(ink.autov2)
    provenance.get_by_text("Parameters text (A1111)").click()
    expect(provenance.locator("[data-infotext]")).to_contain_text(f'Lora hashes: "Ink wash: {ink.autov2}')
    screenshot("job-provenance")

    # What made this? From the nav, upload the output image.
    page.get_by_role("link", name="What made this?").first.click()
    expect(page.get_by_role("heading", name="What made this?")).to_be_visible()
    page.get_by_label("Output image", exact=True).set_input_files(str(studio["output"]))
    page.get_by_role("button", name="Read the recipe").click()
    recipe = page.get_by_role("region", name="Recipe")
    expect(recipe).to_contain_text("inkwash, a lighthouse on a cliff at dusk")
    expect(recipe).to_contain_text("1234")
    expect(recipe.get_by_role("link", name="Ink wash")).to_have_attribute(
        "href", f"/w/{workspace.slug}/loras/{ink.id}/"
    )
    expect(recipe.get_by_role("note")).to_contain_text("Not in this workspace: Paper texture")
    screenshot("what-made-this")

    recipe.get_by_role("link", name="Open in Generate").click()
    expect(page).to_have_url(re.compile(r"/generate/\?model=flux-demo"))
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("inkwash, a lighthouse on a cliff at dusk")

    # A file that is not an output image: the reason, in place, and no recipe.
    not_png = tmp_path / "notes.png"
    not_png.write_bytes(b"just text")
    page.goto(f"/w/{workspace.slug}/what-made-this/")
    page.get_by_label("Output image", exact=True).set_input_files(str(not_png))
    page.get_by_role("button", name="Read the recipe").click()
    expect(page.get_by_role("alert")).to_have_text("This is not a PNG image.")
    expect(page.get_by_role("region", name="Recipe")).to_have_count(0)
    screenshot("what-made-this-error")
