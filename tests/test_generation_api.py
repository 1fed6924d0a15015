"""Creating jobs: every problem is a 400 naming it, found before any GPU time; snapshots, cancel,
retry, the model registry, and 404 across workspaces."""

from pathlib import Path

import pytest
from django.test import override_settings

from generation.models import GenerationJob, JobStatus
from loras import services as lora_services
from loras.models import LoRA
from tests.factories import MembershipFactory, WorkspaceFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = pytest.mark.django_db

WAN = "wan22-a14b-demo"


@pytest.fixture(autouse=True)
def models_built(demo_models):
    return demo_models


@pytest.fixture
def make_lora(workspace, owner, tmp_path):
    counter = iter(range(1000))

    def make(name: str, *, family: str = "wan-demo", blocks: int = 1, **fields) -> LoRA:
        seed = next(counter)
        path = write_lora(tmp_path / f"{name}-{seed}.safetensors", family=family, blocks=blocks, seed=seed)
        actor = workspace.memberships.get(user=owner)
        lora = ingest_ready(actor=actor, path=path, options=lora_services.LoRAOptions(name=name))
        if fields:
            LoRA.objects.filter(id=lora.id).update(**fields)
            lora.refresh_from_db()
        return lora

    return make


def create(api, workspace, **body):
    return api.post(
        f"/api/v1/workspaces/{workspace.slug}/generations/", {"model": WAN, "prompt": "a cat", **body}, format="json"
    )


def test_models_endpoint_lists_registry_with_capabilities(api):
    response = api.get("/api/v1/models/")
    assert response.status_code == 200
    models = {m["key"]: m for m in response.json()}
    assert {"wan22-t2v-a14b", "wan22-ti2v-5b", "flux1-dev", WAN, "wan-ti2v-demo", "flux-demo"} <= set(models)
    a14b = models["wan22-t2v-a14b"]
    assert a14b["experts"] == {"high": "transformer", "low": "transformer_2"} and a14b["family"] == "wan-14b"
    assert a14b["capabilities"]["default_guidance_2"] is not None and a14b["kind"] == "video"
    assert models["flux1-dev"]["experts"] == {"high": "transformer"} and models["flux1-dev"]["kind"] == "image"
    assert models[WAN]["weights_present"] is True


def test_models_file_points_a_key_at_a_snapshot(owner, client_for, tmp_path):
    owner.is_staff = True  # server paths are shown to staff only
    owner.save()
    api = client_for(owner)
    config = tmp_path / "models.yaml"
    config.write_text("wan22-t2v-a14b:\n  path: /srv/models/wan-a14b\nflux1-dev:\n  enabled: false\n")
    with override_settings(LORASITE_MODELS_FILE=str(config)):
        models = {m["key"]: m for m in api.get("/api/v1/models/").json()}
    assert models["wan22-t2v-a14b"]["path"] == "/srv/models/wan-a14b"
    assert "flux1-dev" not in models


def test_create_queues_with_defaults_and_snapshots(api, workspace, make_lora):
    high, low = make_lora("anime"), make_lora("detail")
    response = create(
        api,
        workspace,
        loras=[{"lora_id": high.id, "weight": 0.8, "expert": "high"}, {"lora_id": low.id, "expert": "low"}],
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["progress"] == 0
    assert body["params"]["width"] == 32 and body["params"]["steps"] == 4 and body["params"]["guidance_2"] == 3.0
    assert isinstance(body["params"]["seed"], int)
    assert [(jl["name"], jl["weight"], jl["expert"]) for jl in body["loras"]] == [
        ("anime", 0.8, "high"),
        ("detail", 1.0, "low"),
    ]
    assert body["loras"][0]["sha256"] == high.sha256


def test_snapshot_survives_rename_and_delete(api, workspace, make_lora, owner):
    lora = make_lora("original")
    job_id = create(api, workspace, loras=[{"lora_id": lora.id}]).json()["id"]
    api.patch(f"/api/v1/workspaces/{workspace.slug}/loras/{lora.id}/", {"name": "renamed"}, format="json")
    api.delete(f"/api/v1/workspaces/{workspace.slug}/loras/{lora.id}/")
    [entry] = api.get(f"/api/v1/workspaces/{workspace.slug}/generations/{job_id}/").json()["loras"]
    assert entry["name"] == "original" and entry["deleted"] is True and entry["lora_id"] == lora.id


def problems(response) -> dict:
    assert response.status_code == 400, response.json()
    return response.json()["errors"]


class TestEveryProblemIs400:
    def test_more_than_five(self, api, workspace, make_lora):
        loras = [{"lora_id": make_lora(f"l{i}").id} for i in range(6)]
        assert "At most 5 LoRAs" in problems(create(api, workspace, loras=loras))["loras"][0]

    def test_weight_out_of_range(self, api, workspace, make_lora):
        lora = make_lora("w")
        assert "loras.0.weight" in problems(create(api, workspace, loras=[{"lora_id": lora.id, "weight": 2.5}]))

    def test_not_in_workspace(self, api, workspace, make_lora):
        other = WorkspaceFactory()
        stranger = MembershipFactory(workspace=other, role=Role.OWNER)
        path = write_lora(Path(f"/tmp/x-{other.id}.safetensors"), seed=999)
        foreign = ingest_ready(actor=stranger, path=path, filename="x.safetensors")
        errors = problems(create(api, workspace, loras=[{"lora_id": foreign.id}]))
        assert errors["loras.0.lora_id"] == [f"LoRA {foreign.id} is not in this workspace"]

    def test_deleted_not_ready_inactive(self, api, workspace, make_lora):
        from django.utils import timezone

        deleted = make_lora("gone", deleted_at=timezone.now())
        processing = make_lora("busy", status="processing")
        inactive = make_lora("off", is_active=False)
        errors = problems(
            create(
                api, workspace, loras=[{"lora_id": deleted.id}, {"lora_id": processing.id}, {"lora_id": inactive.id}]
            )
        )
        assert errors["loras.0.lora_id"] == ["LoRA 'gone' has been deleted"]
        assert "not ready" in errors["loras.1.lora_id"][0]
        assert "inactive" in errors["loras.2.lora_id"][0]

    def test_incompatible_family_lists_compatible_ones(self, api, workspace, make_lora):
        make_lora("good wan")
        flux = make_lora("portrait", family="flux-demo")
        message = problems(create(api, workspace, loras=[{"lora_id": flux.id}]))["loras.0.lora_id"][0]
        assert message.startswith("'portrait' is a FLUX demo (tiny) LoRA; Wan 2.2 A14B (demo) needs a wan-demo LoRA.")
        assert "good wan" in message

    def test_shapes_that_cannot_fit(self, api, workspace, make_lora):
        too_deep = make_lora("deep", blocks=4)  # the demo model has 2 blocks
        message = problems(create(api, workspace, loras=[{"lora_id": too_deep.id}]))["loras.0.lora_id"][0]
        assert "does not fit" in message and "has 2 blocks" in message
        wrong_width = make_lora("wide")
        LoRA.objects.filter(id=wrong_width.id).update(module_shapes={"transformer": {"blocks.0.attn1.to_q": [48, 48]}})
        message = problems(create(api, workspace, loras=[{"lora_id": wrong_width.id}]))["loras.0.lora_id"][0]
        assert "48→48 in the LoRA but the block layers of Wan 2.2 A14B (demo) read 24 or 32 features" in message

    def test_params_outside_capabilities(self, api, workspace):
        errors = problems(
            create(api, workspace, params={"width": 1280, "height": 720, "steps": 500, "num_frames": 4, "fps": 60})
        )
        assert {"params.width", "params.steps", "params.num_frames", "params.fps"} <= set(errors)

    def test_single_expert_models_refuse_expert_and_guidance_2(self, api, workspace, make_lora):
        lora = make_lora("s")
        errors = problems(
            create(
                api,
                workspace,
                model="wan-ti2v-demo",
                params={"guidance_2": 2.0},
                loras=[{"lora_id": lora.id, "expert": "low"}],
            )
        )
        assert {"params.guidance_2", "loras.0.expert"} <= set(errors)

    def test_unknown_model_and_missing_weights(self, api, workspace, tmp_path):
        assert "model" in problems(create(api, workspace, model="nope"))
        message = problems(create(api, workspace, model="wan22-t2v-a14b", params={}))["model"][0]
        assert "not installed" in message

    def test_several_problems_in_one_answer(self, api, workspace, make_lora):
        response = create(api, workspace, params={"steps": 99}, loras=[{"lora_id": 10**9}])
        body = response.json()
        assert response.status_code == 400 and body["message"].startswith("2 problems")
        assert not GenerationJob.objects.exists()

    def test_viewer_cannot_create(self, client_for, member_of, workspace):
        assert create(client_for(member_of(Role.VIEWER)), workspace).status_code == 403


def test_cancel_queued_then_409(api, workspace):
    job_id = create(api, workspace).json()["id"]
    response = api.post(f"/api/v1/workspaces/{workspace.slug}/generations/{job_id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert api.post(f"/api/v1/workspaces/{workspace.slug}/generations/{job_id}/cancel/").status_code == 409


def test_cancel_running_sets_the_flag_for_the_worker(api, workspace):
    job_id = create(api, workspace).json()["id"]
    GenerationJob.objects.filter(id=job_id).update(status=JobStatus.RUNNING)
    assert api.post(f"/api/v1/workspaces/{workspace.slug}/generations/{job_id}/cancel/").json()["status"] == "running"
    assert GenerationJob.objects.get(id=job_id).cancel_requested


def test_retry_makes_a_new_job_with_the_same_inputs(api, workspace, make_lora):
    lora = make_lora("again")
    first = create(
        api, workspace, prompt="a dog", params={"seed": 7}, loras=[{"lora_id": lora.id, "weight": 0.5, "expert": "low"}]
    ).json()
    response = api.post(f"/api/v1/workspaces/{workspace.slug}/generations/{first['id']}/retry/")
    assert response.status_code == 201
    second = response.json()
    assert second["id"] != first["id"] and second["retry_of"] == first["id"]
    assert (second["prompt"], second["params"], second["loras"]) == (first["prompt"], first["params"], first["loras"])


def test_another_workspace_is_404(client_for, api, workspace):
    job_id = create(api, workspace).json()["id"]
    other = WorkspaceFactory()
    stranger = client_for(MembershipFactory(workspace=other, role=Role.OWNER).user)
    for method, path in [
        ("get", f"/api/v1/workspaces/{workspace.slug}/generations/"),
        ("get", f"/api/v1/workspaces/{workspace.slug}/generations/{job_id}/"),
        ("post", f"/api/v1/workspaces/{workspace.slug}/generations/{job_id}/cancel/"),
        ("post", f"/api/v1/workspaces/{workspace.slug}/generations/{job_id}/retry/"),
        ("get", f"/api/v1/workspaces/{other.slug}/generations/{job_id}/"),
        ("post", f"/api/v1/workspaces/{other.slug}/generations/{job_id}/cancel/"),
    ]:
        assert getattr(stranger, method)(path).status_code == 404, path
    assert GenerationJob.objects.get(id=job_id).status == JobStatus.QUEUED


class TestWeightPerExpert:
    def test_both_with_weight_low_is_stored_and_shown(self, api, workspace, make_lora):
        lora = make_lora("pair")
        response = create(
            api, workspace, loras=[{"lora_id": lora.id, "expert": "both", "weight": 1.0, "weight_low": 0.5}]
        )
        assert response.status_code == 201, response.json()
        [entry] = response.json()["loras"]
        assert (entry["expert"], entry["weight"], entry["weight_low"]) == ("both", 1.0, 0.5)
        job_lora = GenerationJob.objects.get(id=response.json()["id"]).job_loras.get()
        assert job_lora.weight_label == "high 1.00 · low 0.50"

    def test_weight_alone_keeps_its_meaning(self, api, workspace, make_lora):
        lora = make_lora("one")
        [entry] = create(api, workspace, loras=[{"lora_id": lora.id, "expert": "both", "weight": 0.7}]).json()["loras"]
        assert (entry["weight"], entry["weight_low"]) == (0.7, None)

    def test_weight_low_defaults_the_expert_from_the_hint(self, api, workspace, make_lora):
        lora = make_lora("hinted", expert="both")
        [entry] = create(api, workspace, loras=[{"lora_id": lora.id, "weight_low": 0.3}]).json()["loras"]
        assert (entry["expert"], entry["weight"], entry["weight_low"]) == ("both", 1.0, 0.3)

    @pytest.mark.parametrize("expert", ["high", "low"])
    def test_weight_low_with_one_expert_is_400_naming_it(self, api, workspace, make_lora, expert):
        lora = make_lora("single")
        errors = problems(create(api, workspace, loras=[{"lora_id": lora.id, "expert": expert, "weight_low": 0.5}]))
        assert list(errors) == ["loras.0.weight_low"]
        assert f"this one is on {expert}" in errors["loras.0.weight_low"][0]
        assert not GenerationJob.objects.exists()

    def test_weight_low_out_of_range_and_on_a_single_expert_model(self, api, workspace, make_lora):
        lora = make_lora("range")
        errors = problems(create(api, workspace, loras=[{"lora_id": lora.id, "expert": "both", "weight_low": -1}]))
        assert errors["loras.0.weight_low"] == ["weight_low must be between 0.0 and 2.0, not -1"]
        errors = problems(create(api, workspace, model="wan-ti2v-demo", loras=[{"lora_id": lora.id, "weight_low": 1}]))
        assert "two-expert models" in errors["loras.0.weight_low"][0]

    def test_retry_keeps_weight_low(self, api, workspace, make_lora):
        lora = make_lora("again")
        first = create(api, workspace, loras=[{"lora_id": lora.id, "expert": "both", "weight": 1.2, "weight_low": 0.4}])
        second = api.post(f"/api/v1/workspaces/{workspace.slug}/generations/{first.json()['id']}/retry/").json()
        assert (second["loras"][0]["weight"], second["loras"][0]["weight_low"]) == (1.2, 0.4)


def test_every_problem_of_a_lora_is_reported_at_once(api, workspace, make_lora):
    """A FLUX LoRA at weight 2.5 on a Wan model: its family and its weight, both, in one answer."""
    flux = make_lora("portrait", family="flux-demo", is_active=False)
    errors = problems(create(api, workspace, loras=[{"lora_id": flux.id, "weight": 2.5, "expert": "low"}]))
    assert errors["loras.0.weight"] == ["weight must be between 0.0 and 2.0, not 2.5"]
    [inactive, family] = errors["loras.0.lora_id"]
    assert "inactive" in inactive and family.startswith("'portrait' is a FLUX demo (tiny) LoRA")
    # A LoRA that is not here at all still has its weight checked.
    errors = problems(create(api, workspace, loras=[{"lora_id": 10**9, "weight": 3}]))
    assert set(errors) == {"loras.0.lora_id", "loras.0.weight"}
