"""LoRA pairs: the partner proposal from file names, pair/unpair through the API, the pair on each half's answer,
deleting a half (409 without a choice), and 404 for another workspace's pairs and LoRAs."""

import pytest

from loras import selectors
from loras.models import LoRA, LoRAPair
from loras.pair_names import pair_keys, pair_name
from tests.factories import LoRAFactory, WorkspaceFactory
from workspaces.models import Role

pytestmark = pytest.mark.django_db


def pairs_url(workspace, suffix: str = "") -> str:
    return f"/api/v1/workspaces/{workspace.slug}/pairs/{suffix}"


def lora_url(workspace, lora, suffix: str = "") -> str:
    return f"/api/v1/workspaces/{workspace.slug}/loras/{lora.id}/{suffix}"


def lora(workspace, user, filename: str, **fields) -> LoRA:
    name = fields.pop("name", filename.removesuffix(".safetensors"))
    return LoRAFactory(workspace=workspace, created_by=user, name=name, original_filename=filename, **fields)


@pytest.fixture
def halves(workspace, owner):
    return (
        lora(workspace, owner, "golden_hour_high_noise.safetensors", expert="high", preferred_weight=0.8),
        lora(workspace, owner, "Golden-Hour-LOW-NOISE.safetensors", expert="low"),
    )


@pytest.mark.parametrize(
    ("first", "second", "partners"),
    [
        ("golden_hour_high_noise.safetensors", "golden_hour_low_noise.safetensors", True),
        ("Golden-Hour-HIGH.safetensors", "golden hour low.safetensors", True),
        ("style_HN_v2.safetensors", "style.LN.v2.safetensors", True),
        ("wan_HighNoise.safetensors", "wan_lownoise.safetensors", True),
        ("style_high_noise.safetensors", "other_low_noise.safetensors", False),
        ("style_high.safetensors", "style_high.safetensors", False),  # same role
        ("highlight.safetensors", "lowlight.safetensors", False),  # not a marker word
        ("style.safetensors", "style_low.safetensors", False),
    ],
)
def test_pair_keys_match_names_that_differ_only_by_the_marker(first, second, partners):
    matched = {(words, role) for words, role in pair_keys(first)} & {
        (words, "high" if role == "low" else "low") for words, role in pair_keys(second)
    }
    assert bool(matched) is partners


def test_pair_name_drops_the_marker():
    assert pair_name("golden_hour_high_noise") == "golden_hour"
    assert pair_name("Style-HN-v2") == "Style-v2"
    assert pair_name("HIGH") == "HIGH"


class TestProposal:
    def test_each_half_proposes_the_other(self, api, workspace, halves):
        high, low = halves
        answer = api.get(lora_url(workspace, high)).json()
        assert answer["proposed_partner"] == {"id": low.id, "name": low.name, "version": "1"}
        assert answer["pair"] is None
        assert api.get(lora_url(workspace, low)).json()["proposed_partner"]["id"] == high.id
        listed = {item["id"]: item for item in api.get(f"/api/v1/workspaces/{workspace.slug}/loras/").json()["results"]}
        assert listed[high.id]["proposed_partner"]["id"] == low.id

    def test_two_candidates_propose_nothing(self, api, workspace, owner, halves):
        high, low = halves
        lora(workspace, owner, "golden_hour_LN.safetensors", expert="low")
        assert api.get(lora_url(workspace, high)).json()["proposed_partner"] is None
        assert api.get(lora_url(workspace, low)).json()["proposed_partner"] is None

    def test_another_workspace_or_model_is_never_proposed(self, api, workspace, owner):
        high = lora(workspace, owner, "a_high.safetensors")
        LoRAFactory(workspace=WorkspaceFactory(), original_filename="a_low.safetensors")
        lora(workspace, owner, "a_low.safetensors", base_model="flux")
        assert api.get(lora_url(workspace, high)).json()["proposed_partner"] is None

    def test_a_paired_lora_proposes_nothing(self, api, workspace, halves):
        high, low = halves
        assert api.post(pairs_url(workspace), {"high": high.id, "low": low.id}, format="json").status_code == 201
        assert api.get(lora_url(workspace, high)).json()["proposed_partner"] is None


class TestPairs:
    def test_create_list_detail_patch_unpair(self, api, workspace, halves):
        high, low = halves
        created = api.post(pairs_url(workspace), {"high": high.id, "low": low.id}, format="json")
        assert created.status_code == 201, created.json()
        pair = created.json()
        assert pair["name"] == "golden_hour"
        assert (pair["weight_high"], pair["weight_low"]) == (0.8, 1.0)  # each half's preferred weight
        assert pair["high"]["id"] == high.id and pair["low"]["file_size"] == low.file_size
        assert [p["id"] for p in api.get(pairs_url(workspace)).json()["results"]] == [pair["id"]]

        on_high = api.get(lora_url(workspace, high)).json()["pair"]
        assert on_high == {
            "id": pair["id"],
            "name": "golden_hour",
            "role": "high",
            "partner": {"id": low.id, "name": low.name, "version": "1"},
            "weight_high": 0.8,
            "weight_low": 1.0,
        }
        assert api.get(lora_url(workspace, low)).json()["pair"]["role"] == "low"

        patched = api.patch(
            pairs_url(workspace, f"{pair['id']}/"), {"name": "Golden", "weight_low": 0.5}, format="json"
        )
        assert patched.status_code == 200 and patched.json()["name"] == "Golden" and patched.json()["weight_low"] == 0.5
        bad = api.patch(pairs_url(workspace, f"{pair['id']}/"), {"weight_high": 3}, format="json")
        assert bad.status_code == 400 and "weight_high" in bad.json()["errors"]

        assert api.delete(pairs_url(workspace, f"{pair['id']}/")).status_code == 204
        assert api.get(pairs_url(workspace, f"{pair['id']}/")).status_code == 404
        assert LoRA.objects.alive().filter(id__in=[high.id, low.id]).count() == 2  # unpairing keeps both
        assert api.get(lora_url(workspace, high)).json()["pair"] is None

    def test_both_expert_halves_take_their_role(self, api, workspace, owner):
        high = lora(workspace, owner, "x_high.safetensors", expert="both")
        low = lora(workspace, owner, "x_low.safetensors", expert="both")
        assert (
            api.post(pairs_url(workspace), {"high": high.id, "low": low.id, "name": "X"}, format="json").status_code
            == 201
        )
        high.refresh_from_db(), low.refresh_from_db()
        assert (high.expert, low.expert) == ("high", "low")
        changed = api.patch(lora_url(workspace, low), {"expert": "high"}, format="json")
        assert changed.status_code == 409 and "pair 'X'" in changed.json()["message"]

    def test_bad_pairs_are_refused(self, api, workspace, owner, halves):
        high, low = halves

        def create(**body):
            return api.post(pairs_url(workspace), body, format="json")

        assert create(high=high.id).status_code == 400
        assert create(high=high.id, low=high.id).status_code == 400
        wrong_roles = create(high=low.id, low=high.id)
        assert wrong_roles.status_code == 400 and "low noise LoRA" in wrong_roles.json()["message"]
        flux = lora(workspace, owner, "f_low.safetensors", expert="low", base_model="flux")
        assert create(high=high.id, low=flux.id).status_code == 400
        failed = lora(workspace, owner, "g_low.safetensors", expert="low", status="failed")
        assert create(high=high.id, low=failed.id).status_code == 400
        assert create(high=high.id, low=low.id, weight_low=2.5).status_code == 400
        assert create(high=high.id, low=low.id).status_code == 201
        other_low = lora(workspace, owner, "h_low.safetensors", expert="low")
        taken = create(high=high.id, low=other_low.id)
        assert taken.status_code == 409 and "already a half of the pair 'golden_hour'" in taken.json()["message"]
        assert LoRAPair.objects.count() == 1

    def test_another_workspaces_pairs_and_loras_are_404(self, api, client_for, workspace, owner, halves, outsider):
        high, low = halves
        pair = api.post(pairs_url(workspace), {"high": high.id, "low": low.id}, format="json").json()
        other = WorkspaceFactory()
        foreign = LoRAFactory(workspace=other, original_filename="golden_hour_low_noise.safetensors", expert="low")
        mine_high = lora(workspace, owner, "y_high.safetensors", expert="high")
        assert (
            api.post(pairs_url(workspace), {"high": mine_high.id, "low": foreign.id}, format="json").status_code == 404
        )
        stranger = client_for(outsider)
        assert stranger.get(pairs_url(workspace)).status_code == 404
        assert stranger.get(pairs_url(workspace, f"{pair['id']}/")).status_code == 404
        assert stranger.delete(pairs_url(workspace, f"{pair['id']}/")).status_code == 404
        assert api.get(pairs_url(other, f"{pair['id']}/")).status_code == 404
        assert LoRAPair.objects.filter(id=pair["id"]).exists()

    def test_viewers_cannot_pair_or_unpair(self, client_for, api, workspace, member_of, halves):
        high, low = halves
        viewer = client_for(member_of(Role.VIEWER))
        assert viewer.post(pairs_url(workspace), {"high": high.id, "low": low.id}, format="json").status_code == 403
        pair = api.post(pairs_url(workspace), {"high": high.id, "low": low.id}, format="json").json()
        assert viewer.get(pairs_url(workspace, f"{pair['id']}/")).status_code == 200
        assert viewer.delete(pairs_url(workspace, f"{pair['id']}/")).status_code == 403


class TestDeletingAHalf:
    @pytest.fixture
    def pair(self, api, workspace, halves):
        high, low = halves
        return api.post(pairs_url(workspace), {"high": high.id, "low": low.id}, format="json").json()

    def test_without_a_choice_409_names_the_pair(self, api, workspace, halves, pair):
        answer = api.delete(lora_url(workspace, halves[0]))
        assert answer.status_code == 409
        assert answer.json()["pair_id"] == pair["id"] and "pair 'golden_hour'" in answer.json()["message"]
        assert api.delete(lora_url(workspace, halves[0]) + "?pair=bogus").status_code == 400
        assert LoRA.objects.alive().count() == 2 and LoRAPair.objects.count() == 1

    def test_unpair_deletes_only_this_half(self, api, workspace, halves, pair):
        high, low = halves
        assert api.delete(lora_url(workspace, low) + "?pair=unpair").status_code == 204
        assert list(LoRA.objects.alive().values_list("id", flat=True)) == [high.id]
        assert not LoRAPair.objects.exists()
        assert api.get(lora_url(workspace, high)).json()["pair"] is None

    def test_delete_both(self, api, workspace, halves, pair):
        assert api.delete(lora_url(workspace, halves[0]) + "?pair=delete_both").status_code == 204
        assert not LoRA.objects.alive().exists() and not LoRAPair.objects.exists()

    def test_pair_list_selector_for_the_generate_page(self, workspace, halves, pair):
        (listed,) = selectors.pair_list(workspace=workspace)
        assert (listed.high, listed.low, listed.weight_high) == (*halves, 0.8)
        assert not selectors.pair_list(workspace=WorkspaceFactory()).exists()


def test_lora_answers_carry_the_models_they_fit(api, workspace, owner):
    wan = lora(workspace, owner, "w.safetensors", base_model="wan-demo")
    fits = {fit["key"]: fit for fit in api.get(lora_url(workspace, wan)).json()["fits"]}
    assert "flux-demo" not in fits
    demo = fits["wan22-a14b-demo"]
    assert demo["display_name"] and demo["kind"] == "video" and demo["resolutions"][0] == "32×32"
    assert demo["max_duration_seconds"] == round(demo["max_frames"] / demo["fps"], 2)
    failed = lora(workspace, owner, "x.safetensors", status="failed")
    assert api.get(lora_url(workspace, failed)).json()["fits"] == []
