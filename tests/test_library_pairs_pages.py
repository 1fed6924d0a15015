"""The library pages' side of pairs and bulk actions (no browser): a pair is one card, the proposal banner pairs,
deleting a half asks, the bulk bar confirms a delete once, the compact view is remembered, a dropped duplicate's
card tells the uploader, and another workspace's ids are 404."""

import pytest

from generation.recipes.services import recipe_create
from loras import services
from loras.models import LoRA, LoRAPair, Status
from tests.factories import LoRAFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, owner):
    client.force_login(owner)
    return client


def half(workspace, owner, filename, **fields):
    return LoRAFactory(
        workspace=workspace,
        created_by=owner,
        name=filename.removesuffix(".safetensors"),
        original_filename=filename,
        **fields,
    )


@pytest.fixture
def halves(workspace, owner):
    return (
        half(workspace, owner, "golden_hour_high_noise.safetensors", expert="high", trigger_words=["gh1"]),
        half(workspace, owner, "golden_hour_low_noise.safetensors", expert="low"),
    )


def paired(workspace, owner, halves) -> LoRAPair:
    return services.pair_create(actor=workspace.memberships.get(user=owner), high=halves[0], low=halves[1])


def test_proposal_banner_pairs_from_the_detail_page(signed_in, workspace, owner, halves):
    high, low = halves
    page = signed_in.get(f"/w/{workspace.slug}/loras/{low.id}/").content.decode()
    assert "Pair with golden_hour_high_noise" in page and "low-noise half" in page
    answer = signed_in.post(f"/w/{workspace.slug}/loras/{low.id}/pair/", {"partner": high.id, "role": "low"})
    assert answer.status_code == 302
    pair = LoRAPair.objects.get()
    assert (pair.high_id, pair.low_id, pair.name) == (high.id, low.id, "golden_hour")
    page = signed_in.get(f"/w/{workspace.slug}/loras/{low.id}/").content.decode()
    assert "Pair “golden_hour”" in page and "Unpair" in page and "Delete both halves" in page
    assert "<strong>As a pair:</strong> No ratings yet; no ratings yet for the base model · 0 generations" in page
    assert signed_in.post(f"/w/{workspace.slug}/loras/{low.id}/unpair/").status_code == 302
    assert not LoRAPair.objects.exists()


def test_a_pair_is_one_card_with_both_halves(signed_in, workspace, owner, halves):
    paired(workspace, owner, halves)
    page = signed_in.get(f"/w/{workspace.slug}/loras/").content.decode()
    assert page.count('class="lora-card pair-card') == 1 and "1 LoRA" in page
    assert f'href="/w/{workspace.slug}/loras/{halves[1].id}/"' in page  # a link to each half
    assert "expert-high" in page and "expert-low" in page and "Rank 16" in page
    assert f"lora_id={halves[0].id}&amp;lora_weight=1&amp;lora_expert=high&amp;lora_id={halves[1].id}" in page
    # Filtered to low-noise LoRAs, the low half is listed on its own card.
    page = signed_in.get(f"/w/{workspace.slug}/loras/?expert=low").content.decode()
    assert f'id="lora-{halves[1].id}"' in page


def test_deleting_a_half_from_the_page_asks_and_obeys(signed_in, workspace, owner, halves):
    paired(workspace, owner, halves)
    url = f"/w/{workspace.slug}/loras/{halves[0].id}/delete/"
    signed_in.post(url)  # no choice: nothing deleted, the detail page says why
    assert LoRA.objects.alive().count() == 2
    signed_in.post(url, {"pair": "delete_both"})
    assert not LoRA.objects.alive().exists()


def test_bulk_delete_confirms_once(signed_in, workspace, owner, halves):
    other = half(workspace, owner, "other.safetensors")
    ids = {"ids": [f"{halves[0].id},{halves[1].id}", str(other.id)], "action": "delete"}
    confirm = signed_in.post(f"/w/{workspace.slug}/loras/bulk/", ids)
    assert confirm.status_code == 200 and "Delete 3 LoRAs?" in confirm.content.decode()
    assert LoRA.objects.alive().count() == 3
    done = signed_in.post(f"/w/{workspace.slug}/loras/bulk/", {**ids, "confirmed": "on"})
    assert done.status_code == 302 and not LoRA.objects.alive().exists()


def test_bulk_tag_and_a_foreign_id(signed_in, workspace, owner, halves):
    answer = signed_in.post(
        f"/w/{workspace.slug}/loras/bulk/", {"ids": [halves[0].id], "action": "tag", "tags": "sunset, warm"}
    )
    assert answer.status_code == 302 and LoRA.objects.get(id=halves[0].id).tags == ["sunset", "warm"]
    foreign = LoRAFactory(workspace=WorkspaceFactory())
    answer = signed_in.post(f"/w/{workspace.slug}/loras/bulk/", {"ids": [halves[0].id, foreign.id], "action": "delete"})
    assert answer.status_code == 404 and LoRA.objects.alive().count() == 3
    assert signed_in.post(f"/w/{workspace.slug}/loras/bulk/", {"ids": ["x"], "action": "delete"}).status_code == 302


def test_compact_view_is_remembered(signed_in, workspace, halves):
    answer = signed_in.get(f"/w/{workspace.slug}/loras/?view=list")
    assert "lora-grid lora-list" in answer.content.decode() and answer.cookies["library_view"].value == "list"
    assert "lora-grid lora-list" in signed_in.get(f"/w/{workspace.slug}/loras/").content.decode()
    assert "lora-grid lora-list" not in signed_in.get(f"/w/{workspace.slug}/loras/?view=grid").content.decode()


def test_a_dropped_duplicates_card_names_the_original(signed_in, workspace, owner):
    original = half(workspace, owner, "a.safetensors", sha256="d" * 64)
    dropped = half(workspace, owner, "b.safetensors", sha256="d" * 64, status=Status.FAILED, file="", error="Dup.")
    LoRA.objects.filter(id=dropped.id).update(deleted_at=original.created_at)
    card = signed_in.get(f"/w/{workspace.slug}/loras/{dropped.id}/card/").content.decode()
    assert 'data-status="duplicate"' in card and f'href="/w/{workspace.slug}/loras/{original.id}/"' in card
    assert f'id="lora-{dropped.id}"' not in signed_in.get(f"/w/{workspace.slug}/loras/").content.decode()


def test_bulk_add_to_a_recipe(signed_in, workspace, owner, halves):
    recipe = recipe_create(
        actor=workspace.memberships.get(user=owner), name="Stack", model="wan22-a14b-demo", prompt_template="a cat"
    )
    for lora in halves:
        LoRA.objects.filter(id=lora.id).update(base_model="wan-demo")
    page = signed_in.get(f"/w/{workspace.slug}/loras/").content.decode()
    assert '<option value="add_to_recipe">Add to recipe</option>' in page
    assert f'<option value="{recipe.id}">Stack' in page
    body = {"ids": [f"{halves[0].id},{halves[1].id}"], "action": "add_to_recipe", "recipe": recipe.id}
    answer = signed_in.post(f"/w/{workspace.slug}/loras/bulk/", body)
    assert answer.status_code == 302
    assert list(recipe.recipe_loras.order_by("position").values_list("lora_ref", flat=True)) == [h.id for h in halves]
