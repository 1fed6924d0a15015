"""Bulk actions on the library: tag, untag, activate, deactivate and delete many LoRAs at once — all or nothing,
scoped to the workspace (another workspace's id is a 404 and nothing changes), role-checked."""

import pytest

from generation.recipes.services import recipe_create
from generation.services import LoRARequest
from loras import services
from loras.models import LoRA, LoRAPair
from lorasite.errors import NotFound, PermissionDenied
from tests.factories import LoRAFactory, MembershipFactory, WorkspaceFactory
from workspaces.models import Role

pytestmark = pytest.mark.django_db


def bulk_url(workspace) -> str:
    return f"/api/v1/workspaces/{workspace.slug}/loras/bulk/"


@pytest.fixture
def loras(workspace, owner):
    return [
        LoRAFactory(workspace=workspace, created_by=owner, tags=["style"]),
        LoRAFactory(workspace=workspace, created_by=owner, tags=[]),
        LoRAFactory(workspace=workspace, created_by=owner, tags=["Anime", "style"]),
    ]


def ids(loras) -> list[int]:
    return [lora.id for lora in loras]


def tags_of(loras) -> list[list[str]]:
    return [LoRA.objects.get(id=lora.id).tags for lora in loras]


def test_tag_and_untag(api, workspace, loras):
    answer = api.post(
        bulk_url(workspace), {"ids": ids(loras), "action": "tag", "tags": ["anime", "new"]}, format="json"
    )
    assert answer.status_code == 200 and answer.json() == {"action": "tag", "changed": 3}
    assert tags_of(loras) == [["style", "anime", "new"], ["anime", "new"], ["Anime", "style", "new"]]
    answer = api.post(bulk_url(workspace), {"ids": ids(loras[:2]), "action": "untag", "tags": ["STYLE"]}, format="json")
    assert answer.json()["changed"] == 1
    assert tags_of(loras) == [["anime", "new"], ["anime", "new"], ["Anime", "style", "new"]]


def test_activate_and_deactivate(api, workspace, loras):
    assert (
        api.post(bulk_url(workspace), {"ids": ids(loras), "action": "deactivate"}, format="json").json()["changed"] == 3
    )
    assert not LoRA.objects.filter(is_active=True).exists()
    assert (
        api.post(bulk_url(workspace), {"ids": ids(loras[:1]), "action": "activate"}, format="json").json()["changed"]
        == 1
    )
    assert list(LoRA.objects.filter(is_active=True).values_list("id", flat=True)) == [loras[0].id]


def test_delete_unpairs_a_half_left_behind(api, owner, workspace, loras):
    high = LoRAFactory(workspace=workspace, created_by=owner, expert="high")
    low = LoRAFactory(workspace=workspace, created_by=owner, expert="low")
    services.pair_create(actor=workspace.memberships.get(user=owner), high=high, low=low)
    answer = api.post(bulk_url(workspace), {"ids": [*ids(loras), high.id], "action": "delete"}, format="json")
    assert answer.status_code == 200 and answer.json()["changed"] == 4
    assert list(LoRA.objects.alive().values_list("id", flat=True)) == [low.id]
    assert not LoRAPair.objects.exists()
    assert api.post(bulk_url(workspace), {"ids": ids(loras), "action": "delete"}, format="json").status_code == 404


def test_another_workspaces_id_is_404_and_nothing_changes(api, workspace, loras, client_for, outsider):
    foreign = LoRAFactory(workspace=WorkspaceFactory())
    for action in ("deactivate", "delete"):
        answer = api.post(bulk_url(workspace), {"ids": [*ids(loras), foreign.id], "action": action}, format="json")
        assert answer.status_code == 404 and str(foreign.id) in answer.json()["message"]
    assert LoRA.objects.alive().filter(is_active=True).count() == 4
    assert (
        client_for(outsider)
        .post(bulk_url(workspace), {"ids": ids(loras), "action": "delete"}, format="json")
        .status_code
        == 404
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": [], "action": "delete"}, "ids"),
        ({"ids": ["x"], "action": "delete"}, "ids.0"),
        ({"ids": [1], "action": "explode"}, "action"),
        ({"ids": [1]}, "action"),
        ({"ids": [1], "action": "tag"}, "tags"),
        ({"ids": [1], "action": "tag", "tags": ["x" * 65]}, "tags.0"),
        ({"ids": list(range(1, 502)), "action": "delete"}, "ids"),
    ],
)
def test_bad_input_is_400_naming_the_field(api, workspace, loras, body, field):
    answer = api.post(bulk_url(workspace), body, format="json")
    assert answer.status_code == 400 and field in answer.json()["errors"], answer.json()
    assert LoRA.objects.alive().count() == 3


def test_roles(client_for, workspace, member_of, owner, loras):
    viewer = client_for(member_of(Role.VIEWER))
    assert viewer.post(bulk_url(workspace), {"ids": ids(loras), "action": "delete"}, format="json").status_code == 403
    member = member_of(Role.MEMBER)
    own = LoRAFactory(workspace=workspace, created_by=member)
    # A member may change their own LoRAs, and a selection with anyone else's changes nothing.
    answer = client_for(member).post(
        bulk_url(workspace), {"ids": [own.id, loras[0].id], "action": "delete"}, format="json"
    )
    assert answer.status_code == 403 and LoRA.objects.alive().count() == 4
    assert (
        client_for(member).post(bulk_url(workspace), {"ids": [own.id], "action": "delete"}, format="json").status_code
        == 200
    )


def test_services_are_scoped_and_atomic(workspace, owner, loras):
    actor = workspace.memberships.get(user=owner)
    foreign = LoRAFactory(workspace=WorkspaceFactory())
    with pytest.raises(NotFound):
        services.lora_bulk_update(actor=actor, lora_ids=[*ids(loras), foreign.id], action="tag", tags=["x"])
    assert tags_of(loras) == [["style"], [], ["Anime", "style"]]
    with pytest.raises(PermissionDenied):
        services.lora_bulk_delete(actor=MembershipFactory(workspace=workspace, role=Role.VIEWER), lora_ids=ids(loras))
    assert LoRA.objects.alive().filter(workspace=workspace).count() == 3


class TestAddToRecipe:
    @pytest.fixture
    def recipe(self, workspace, owner):
        first = LoRAFactory(workspace=workspace, created_by=owner, base_model="wan-demo")
        return recipe_create(
            actor=workspace.memberships.get(user=owner),
            name="Stack",
            model="wan22-a14b-demo",
            prompt_template="a cat, {trigger}",
            loras=[LoRARequest(lora_id=first.id)],
        )

    def test_appends_new_loras_and_a_pair_in_its_roles(self, api, workspace, owner, recipe):
        high = LoRAFactory(workspace=workspace, created_by=owner, base_model="wan-demo", expert="high")
        low = LoRAFactory(workspace=workspace, created_by=owner, base_model="wan-demo", expert="low")
        services.pair_create(
            actor=workspace.memberships.get(user=owner), high=high, low=low, weight_high=0.9, weight_low=0.4
        )
        existing = recipe.recipe_loras.get().lora_ref
        body = {"ids": [existing, high.id, low.id], "action": "add_to_recipe", "recipe": recipe.id}
        answer = api.post(bulk_url(workspace), body, format="json")
        assert answer.status_code == 200 and answer.json()["changed"] == 2, answer.json()
        rows = list(recipe.recipe_loras.order_by("position").values_list("lora_ref", "expert", "weight"))
        assert rows[1:] == [(high.id, "high", 0.9), (low.id, "low", 0.4)]

    def test_refusals_change_nothing(self, api, workspace, owner, recipe):
        flux = LoRAFactory(workspace=workspace, created_by=owner, base_model="flux")
        answer = api.post(
            bulk_url(workspace), {"ids": [flux.id], "action": "add_to_recipe", "recipe": recipe.id}, format="json"
        )
        assert answer.status_code == 400 and recipe.recipe_loras.count() == 1
        missing = api.post(bulk_url(workspace), {"ids": [flux.id], "action": "add_to_recipe"}, format="json")
        assert missing.status_code == 400 and "recipe" in missing.json()["errors"]
        other = api.post(
            bulk_url(WorkspaceFactory()),
            {"ids": [flux.id], "action": "add_to_recipe", "recipe": recipe.id},
            format="json",
        )
        assert other.status_code == 404
