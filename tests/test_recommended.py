"""Recommended settings and distill detection: from names and metadata at ingest, editable through the API."""

import pytest

from loras import recommended, services
from tests.factories import LoRAFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora


@pytest.mark.parametrize(
    "filename",
    [
        "Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors",
        "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors",
        "Wan21_CausVid_14B_T2V_lora_rank32.safetensors",
        "flux_turbo_alpha.safetensors",
        "my-style-8-step.safetensors",
        "sdxl_lcm_lora.safetensors",
    ],
)
def test_distill_names(filename):
    assert recommended.detect_distill(filename=filename)


@pytest.mark.parametrize(
    "filename",
    ["anime_style_v2.safetensors", "highlight_glow.safetensors", "portrait_30_steps_trained.safetensors", "v1.4steps"],
)
def test_ordinary_names_are_not_distill(filename):
    assert not recommended.detect_distill(filename=filename)


def test_distill_from_metadata_title():
    assert recommended.detect_distill(filename="a.safetensors", metadata={"modelspec.title": "Wan Lightning 2.2"})
    assert recommended.detect_distill(filename="a.safetensors", metadata={"ss_output_name": "causvid_v2"})


def test_settings_from_explicit_keys_and_usage_hint():
    assert recommended.settings_from_metadata({"steps": "6", "cfg": "1.5", "modelspec.shift": "5"}) == {
        "steps": 6,
        "guidance": 1.5,
        "shift": 5.0,
    }
    hint = {"modelspec.usage_hint": "Use 8 steps, CFG 1.0 and flow shift 3"}
    assert recommended.settings_from_metadata(hint) == {"steps": 8, "guidance": 1.0, "shift": 3.0}
    # Training metadata says how it was trained, not how to run it.
    assert recommended.settings_from_metadata({"ss_steps": "3000", "ss_discrete_flow_shift": "3"}) == {}
    assert recommended.settings_from_metadata({"cfg": "nan", "steps": "many"}) == {}


def test_distill_proposal_takes_steps_from_the_name_and_guidance_one():
    settings, distill = recommended.propose(
        name="lightning", filename="wan22_lightx2v_8steps_high.safetensors", metadata={}, two_experts=True
    )
    assert distill and settings == {"steps": 8, "guidance": 1.0, "guidance_2": 1.0}
    settings, distill = recommended.propose(name="x", filename="causvid.safetensors", metadata={}, two_experts=False)
    assert distill and settings == {"steps": 4, "guidance": 1.0}
    # The file's own numbers win over the distill defaults.
    settings, _ = recommended.propose(
        name="x", filename="lightx2v.safetensors", metadata={"steps": "6"}, two_experts=False
    )
    assert settings["steps"] == 6
    assert recommended.propose(name="anime", filename="anime.safetensors", metadata={}, two_experts=True) == ({}, False)


def test_summary():
    assert recommended.summary({"steps": 4, "guidance": 1.0, "guidance_2": 1.0}) == "4 steps, guidance 1, guidance 2 1"
    assert recommended.summary({}) == ""


@pytest.mark.django_db
def test_ingest_proposes_settings_and_distill(workspace, owner, tmp_path):
    actor = workspace.memberships.get(user=owner)
    path = write_lora(tmp_path / "wan22_lightx2v_4steps_lora.safetensors", family="wan-demo", blocks=1, seed=3)
    lora = ingest_ready(actor=actor, path=path)
    assert lora.status == "ready"
    assert lora.is_distill
    # wan-demo runs on the two-expert demo model: both guidances are proposed.
    assert lora.recommended_settings == {"steps": 4, "guidance": 1.0, "guidance_2": 1.0}

    path = write_lora(
        tmp_path / "style.safetensors", family="flux-demo", seed=4, metadata={"modelspec.usage_hint": "6 steps, cfg 2"}
    )
    lora = ingest_ready(actor=actor, path=path, options=services.LoRAOptions(name="Style"))
    assert not lora.is_distill
    assert lora.recommended_settings == {"steps": 6, "guidance": 2.0}


@pytest.fixture
def lora(workspace, owner, tmp_path):
    actor = workspace.memberships.get(user=owner)
    return ingest_ready(actor=actor, path=write_lora(tmp_path / "anime.safetensors", family="wan-demo", blocks=1))


def detail_url(lora) -> str:
    return f"/api/v1/workspaces/{lora.workspace.slug}/loras/{lora.id}/"


@pytest.mark.django_db
class TestAPI:
    def test_patch_and_read_back(self, api, lora):
        response = api.patch(
            detail_url(lora),
            {"recommended_settings": {"steps": 4, "guidance": 1, "guidance_2": 1, "shift": 5}, "is_distill": True},
            format="json",
        )
        assert response.status_code == 200, response.json()
        body = api.get(detail_url(lora)).json()
        assert body["recommended_settings"] == {"steps": 4, "guidance": 1.0, "guidance_2": 1.0, "shift": 5.0}
        assert body["is_distill"] is True
        assert (
            api.patch(detail_url(lora), {"recommended_settings": {}}, format="json").json()["recommended_settings"]
            == {}
        )

    def test_checked_against_a_named_model(self, api, lora):
        # The demo Wan model runs 1–10 steps.
        response = api.patch(
            detail_url(lora), {"recommended_settings": {"model": "wan22-a14b-demo", "steps": 20}}, format="json"
        )
        assert response.status_code == 400
        assert "recommended_settings.steps" in response.json()["errors"]
        response = api.patch(
            detail_url(lora), {"recommended_settings": {"model": "wan-ti2v-demo", "guidance_2": 1}}, format="json"
        )
        assert "recommended_settings.guidance_2" in response.json()["errors"]
        response = api.patch(detail_url(lora), {"recommended_settings": {"model": "nope"}}, format="json")
        assert "recommended_settings.model" in response.json()["errors"]

    @pytest.mark.parametrize(
        ("settings", "key"),
        [
            ({"steps": "four"}, "steps"),
            ({"steps": 2.5}, "steps"),
            ({"steps": 0}, "steps"),
            ({"guidance": -1}, "guidance"),
            ({"guidance": True}, "guidance"),
            ({"shift": 1000}, "shift"),
            ({"sampler": "euler"}, "sampler"),
        ],
    )
    def test_bad_values_name_the_key_and_change_nothing(self, api, lora, settings, key):
        response = api.patch(detail_url(lora), {"recommended_settings": settings, "is_distill": True}, format="json")
        assert response.status_code == 400, response.json()
        assert list(response.json()["errors"]) == [f"recommended_settings.{key}"]
        lora.refresh_from_db()
        assert lora.recommended_settings == {} and not lora.is_distill

    def test_not_an_object(self, api, lora):
        response = api.patch(detail_url(lora), {"recommended_settings": [4]}, format="json")
        assert response.status_code == 400
        assert "recommended_settings" in response.json()["errors"]

    def test_viewer_cannot_edit_and_outsider_gets_404(self, client_for, member_of, outsider, lora):
        viewer = client_for(member_of("viewer"))
        assert viewer.patch(detail_url(lora), {"is_distill": True}, format="json").status_code == 403
        assert client_for(outsider).patch(detail_url(lora), {"is_distill": True}, format="json").status_code == 404


@pytest.mark.django_db
class TestDetailPage:
    """The two editable parts of the LoRA page, saved with htmx (errors shown in the part, status 400)."""

    def section(self, lora, name: str) -> str:
        return f"/w/{lora.workspace.slug}/loras/{lora.id}/{name}/"

    def test_trigger_words_edit(self, client, owner, lora):
        client.force_login(owner)
        editor = client.get(self.section(lora, "triggers") + "edit/", headers={"HX-Request": "true"})
        assert editor.status_code == 200 and 'name="trigger_words"' in editor.text
        saved = client.post(
            self.section(lora, "triggers"), {"trigger_words": "ohwx, red scarf ,"}, headers={"HX-Request": "true"}
        )
        assert saved.status_code == 200 and "Trigger words saved." in saved.text
        lora.refresh_from_db()
        assert lora.trigger_words == ["ohwx", "red scarf"]
        bad = client.post(self.section(lora, "triggers"), {"trigger_words": "x" * 65}, headers={"HX-Request": "true"})
        assert bad.status_code == 400
        assert "too long" in bad.text and 'id="lora-triggers"' in bad.text and "<html" not in bad.text
        lora.refresh_from_db()
        assert lora.trigger_words == ["ohwx", "red scarf"]

    def test_recommended_edit(self, client, owner, lora):
        client.force_login(owner)
        page = client.get(f"/w/{lora.workspace.slug}/loras/{lora.id}/")
        assert "Recommended settings" in page.text and "the model's defaults apply" in page.text
        saved = client.post(
            self.section(lora, "recommended"),
            {"steps": "4", "guidance": "1", "guidance_2": "", "shift": "5", "is_distill": "on"},
            headers={"HX-Request": "true"},
        )
        assert saved.status_code == 200, saved.text
        assert "4 steps, guidance 1, shift 5" in saved.text and "Distill" in saved.text
        lora.refresh_from_db()
        assert lora.recommended_settings == {"steps": 4, "guidance": 1.0, "shift": 5.0} and lora.is_distill
        bad = client.post(self.section(lora, "recommended"), {"steps": "50"}, headers={"HX-Request": "true"})
        assert bad.status_code == 400 and "steps must be a whole number from 1 to 10" in bad.text
        lora.refresh_from_db()
        assert lora.recommended_settings["steps"] == 4

    def test_viewer_sees_no_edit_buttons_and_cannot_post(self, client, member_of, lora):
        client.force_login(member_of("viewer"))
        page = client.get(f"/w/{lora.workspace.slug}/loras/{lora.id}/")
        assert "trigger words</span>" not in page.text and "recommended settings</span>" not in page.text
        assert client.post(self.section(lora, "triggers"), {"trigger_words": "x"}).status_code == 403


@pytest.mark.django_db
def test_a_pair_carries_recommended_settings(api, workspace, owner):
    high = LoRAFactory(workspace=workspace, created_by=owner, name="x_high", expert="high", base_model="wan-14b")
    low = LoRAFactory(workspace=workspace, created_by=owner, name="x_low", expert="low", base_model="wan-14b")
    pairs = f"/api/v1/workspaces/{workspace.slug}/pairs/"
    pair = api.post(pairs, {"high": high.id, "low": low.id}, format="json").json()
    assert pair["recommended_settings"] == {}
    settings = {"steps": 4, "guidance": 1, "guidance_2": 1}
    response = api.patch(f"{pairs}{pair['id']}/", {"recommended_settings": settings}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["recommended_settings"] == {"steps": 4, "guidance": 1.0, "guidance_2": 1.0}
    # Checked as a LoRA's: Wan 2.2 T2V-A14B runs 1–80 steps.
    response = api.patch(f"{pairs}{pair['id']}/", {"recommended_settings": {"steps": 500}}, format="json")
    assert response.status_code == 400 and list(response.json()["errors"]) == ["recommended_settings.steps"]
