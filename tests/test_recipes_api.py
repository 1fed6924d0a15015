"""Recipes over the API: CRUD, every bad input a 400 naming it (nothing saved), roles, 404 across workspaces, a
deleted LoRA's problem (run → 409 naming it), saving from a finished job, and what Apply hands the Generate page."""

import pytest
from django.utils import timezone

from generation.models import GenerationJob, JobStatus, Recipe
from generation.recipes import selectors
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

    def make(name: str, *, family: str = "wan-demo", **fields) -> LoRA:
        seed = next(counter)
        path = write_lora(tmp_path / f"{name}-{seed}.safetensors", family=family, blocks=1, seed=seed)
        actor = workspace.memberships.get(user=owner)
        lora = ingest_ready(actor=actor, path=path, options=lora_services.LoRAOptions(name=name))
        if fields:
            LoRA.objects.filter(id=lora.id).update(**fields)
            lora.refresh_from_db()
        return lora

    return make


def url(workspace, suffix: str = "") -> str:
    return f"/api/v1/workspaces/{workspace.slug}/recipes/{suffix}"


def body(**changes) -> dict:
    return {
        "name": "Anime cat",
        "model": WAN,
        "prompt_template": "{trigger}, a cat in the rain",
        "negative_prompt": "blurry",
        "params": {"steps": 4, "guidance": 1.0, "guidance_2": 1.0, "width": 48, "height": 32},
        **changes,
    }


@pytest.fixture
def loras(make_lora):
    return [
        make_lora("Anime", trigger_words=["anime style", "ohwx"], expert="high"),
        make_lora("Detail", trigger_words=["ohwx", "fine detail"], expert="low"),
    ]


@pytest.fixture
def recipe(api, workspace, loras):
    response = api.post(
        url(workspace),
        body(
            loras=[
                {"lora_id": loras[0].id, "weight": 0.8, "expert": "both", "weight_low": 0.4},
                {"lora_id": loras[1].id, "expert": "low"},
            ]
        ),
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


class TestCrud:
    def test_create_read_list(self, api, workspace, recipe, loras):
        assert recipe["model"] == WAN and recipe["model_name"] == "Wan 2.2 A14B (demo)"
        # {trigger} is every LoRA's trigger words, in order, each once.
        assert recipe["prompt"] == "anime style, ohwx, fine detail, a cat in the rain"
        assert recipe["params"] == {"steps": 4, "guidance": 1.0, "guidance_2": 1.0, "width": 48, "height": 32}
        assert [(e["lora_id"], e["weight"], e["weight_low"], e["expert"]) for e in recipe["loras"]] == [
            (loras[0].id, 0.8, 0.4, "both"),
            (loras[1].id, 1.0, None, "low"),  # the LoRA's preferred weight
        ]
        assert recipe["problems"] == [] and recipe["created_by"]
        assert api.get(url(workspace, f"{recipe['id']}/")).json() == recipe
        listed = api.get(url(workspace)).json()
        assert listed["count"] == 1 and listed["results"][0]["id"] == recipe["id"]

    def test_update_and_delete(self, api, workspace, recipe, loras):
        response = api.patch(url(workspace, f"{recipe['id']}/"), {"name": "Renamed"}, format="json")
        assert response.status_code == 200, response.json()
        assert response.json()["name"] == "Renamed" and len(response.json()["loras"]) == 2
        response = api.patch(
            url(workspace, f"{recipe['id']}/"), {"loras": [{"lora_id": loras[1].id, "weight": 1.5}]}, format="json"
        )
        assert [(e["lora_id"], e["weight"], e["expert"]) for e in response.json()["loras"]] == [
            (loras[1].id, 1.5, "low")
        ]
        assert api.delete(url(workspace, f"{recipe['id']}/")).status_code == 204
        assert api.get(url(workspace, f"{recipe['id']}/")).status_code == 404
        assert not Recipe.objects.exists()

    def test_no_trigger_words_takes_the_placeholder_and_its_comma(self, api, workspace):
        response = api.post(url(workspace), body(name="Plain"), format="json")
        assert response.status_code == 201 and response.json()["prompt"] == "a cat in the rain"

    def test_duplicate_name_is_409(self, api, workspace, recipe):
        response = api.post(url(workspace), body(), format="json")
        assert response.status_code == 409 and "name" in response.json()["errors"]


class TestBadInput:
    @pytest.mark.parametrize(
        ("changes", "key"),
        [
            ({"name": ""}, "name"),
            ({"name": "x" * 101}, "name"),
            ({"prompt_template": "   "}, "prompt_template"),
            ({"model": "nope"}, "model"),
            ({"params": {"steps": 500}}, "params.steps"),
            ({"params": {"width": 1024, "height": 1024}}, "params.width"),
            ({"params": {"steps": "many"}}, "params.steps"),
            ({"loras": [{"lora_id": 999999}]}, "loras.0.lora_id"),
            ({"loras": "x"}, "loras.non_field_errors"),
        ],
    )
    def test_named_and_nothing_saved(self, api, workspace, changes, key):
        response = api.post(url(workspace), body(**changes), format="json")
        assert response.status_code == 400, response.json()
        assert key in response.json()["errors"], response.json()
        assert not Recipe.objects.exists()

    def test_lora_problems_like_a_job(self, api, workspace, make_lora):
        flux = make_lora("Flux style", family="flux-demo")
        high = make_lora("High", expert="high")
        response = api.post(
            url(workspace),
            body(loras=[{"lora_id": flux.id, "weight": 2.5}, {"lora_id": high.id, "expert": "high", "weight_low": 1}]),
            format="json",
        )
        assert response.status_code == 400
        errors = response.json()["errors"]
        assert {"loras.0.lora_id", "loras.0.weight", "loras.1.weight_low"} <= set(errors)
        assert not Recipe.objects.exists()

    def test_another_workspaces_lora_is_not_found(self, api, workspace, tmp_path, outsider):
        other = WorkspaceFactory()
        actor = MembershipFactory(workspace=other, user=outsider, role=Role.OWNER)
        foreign = ingest_ready(actor=actor, path=write_lora(tmp_path / "f.safetensors", family="wan-demo", blocks=1))
        response = api.post(url(workspace), body(loras=[{"lora_id": foreign.id}]), format="json")
        assert response.status_code == 400 and "not in this workspace" in str(response.json()["errors"])


class TestAccess:
    def test_viewer_reads_but_cannot_write(self, client_for, member_of, workspace, recipe):
        viewer = client_for(member_of(Role.VIEWER))
        assert viewer.get(url(workspace, f"{recipe['id']}/")).status_code == 200
        assert viewer.post(url(workspace), body(name="Mine"), format="json").status_code == 403
        assert viewer.patch(url(workspace, f"{recipe['id']}/"), {"name": "x"}, format="json").status_code == 403
        assert viewer.delete(url(workspace, f"{recipe['id']}/")).status_code == 403
        assert viewer.post(url(workspace, f"{recipe['id']}/run/"), {}, format="json").status_code == 403

    def test_member_writes(self, client_for, member_of, workspace, recipe):
        member = client_for(member_of(Role.MEMBER))
        assert member.patch(url(workspace, f"{recipe['id']}/"), {"name": "Shared"}, format="json").status_code == 200

    def test_another_workspace_is_404(self, client_for, outsider, workspace, recipe):
        other = client_for(outsider)
        for method, suffix in (("get", ""), ("patch", ""), ("delete", ""), ("post", "run/")):
            response = getattr(other, method)(url(workspace, f"{recipe['id']}/{suffix}"), {}, format="json")
            assert response.status_code == 404
        # A member of another workspace cannot reach this one's recipe through their own slug either.
        mine = WorkspaceFactory()
        MembershipFactory(workspace=mine, user=outsider, role=Role.OWNER)
        assert other.get(url(mine, f"{recipe['id']}/")).status_code == 404


class TestDeletedLoRA:
    def test_problem_listed_and_run_is_409(self, api, workspace, recipe, loras):
        LoRA.objects.filter(id=loras[1].id).update(deleted_at=timezone.now())
        body_ = api.get(url(workspace, f"{recipe['id']}/")).json()
        assert body_["problems"] == ["LoRA 'Detail' has been deleted"]
        assert body_["loras"][1]["problem"] == "LoRA 'Detail' has been deleted"
        assert body_["prompt"] == "anime style, ohwx, a cat in the rain"  # a deleted LoRA's words leave it
        response = api.post(url(workspace, f"{recipe['id']}/run/"), {}, format="json")
        assert response.status_code == 409 and "Detail" in response.json()["message"]
        assert not GenerationJob.objects.exists()
        # Purged, then gone altogether: each says so.
        LoRA.objects.filter(id=loras[1].id).update(purged_at=timezone.now())
        assert api.get(url(workspace, f"{recipe['id']}/")).json()["problems"] == [
            "LoRA 'Detail' has been deleted and its file purged"
        ]
        LoRA.objects.filter(id=loras[1].id).delete()
        assert api.get(url(workspace, f"{recipe['id']}/")).json()["problems"] == ["LoRA 'Detail' no longer exists"]
        # Fixed by removing it: runs again.
        api.patch(url(workspace, f"{recipe['id']}/"), {"loras": [{"lora_id": loras[0].id}]}, format="json")
        assert api.get(url(workspace, f"{recipe['id']}/")).json()["problems"] == []

    def test_rename_works_before_the_fix(self, api, workspace, recipe, loras):
        LoRA.objects.filter(id=loras[0].id).update(deleted_at=timezone.now())
        response = api.patch(url(workspace, f"{recipe['id']}/"), {"name": "Still broken"}, format="json")
        assert response.status_code == 200 and response.json()["problems"]


class TestRun:
    def test_run_queues_the_recipe(self, api, workspace, recipe, loras):
        response = api.post(url(workspace, f"{recipe['id']}/run/"), {"seed": 7}, format="json")
        assert response.status_code == 201, response.json()
        job = response.json()
        assert job["prompt"] == "anime style, ohwx, fine detail, a cat in the rain"
        assert job["params"]["seed"] == 7 and job["params"]["steps"] == 4
        assert [(e["lora_id"], e["expert"]) for e in job["loras"]] == [(loras[0].id, "both"), (loras[1].id, "low")]


class TestFromJob:
    @pytest.fixture
    def job(self, api, workspace, loras):
        response = api.post(
            f"/api/v1/workspaces/{workspace.slug}/generations/",
            {
                "model": WAN,
                "prompt": "a dog",
                "params": {"steps": 3, "seed": 42},
                "loras": [{"lora_id": loras[0].id, "expert": "both", "weight": 1.0, "weight_low": 0.5}],
            },
            format="json",
        )
        assert response.status_code == 201, response.json()
        return GenerationJob.objects.get(id=response.json()["id"])

    def test_from_a_finished_job(self, api, workspace, job, loras):
        GenerationJob.objects.filter(id=job.id).update(status=JobStatus.SUCCEEDED)
        response = api.post(url(workspace, "from-job/"), {"job_id": str(job.id)}, format="json")
        assert response.status_code == 201, response.json()
        recipe = response.json()
        assert recipe["name"] == "a dog" and recipe["prompt_template"] == "a dog"
        assert recipe["params"]["seed"] == 42 and recipe["params"]["steps"] == 3
        assert [(e["lora_id"], e["weight"], e["weight_low"], e["expert"]) for e in recipe["loras"]] == [
            (loras[0].id, 1.0, 0.5, "both")
        ]
        # A second save gets a free name.
        again = api.post(url(workspace, "from-job/"), {"job_id": str(job.id)}, format="json").json()
        assert again["name"] == "a dog (2)"

    def test_unfinished_job_is_409_and_foreign_job_404(self, api, workspace, job, client_for, outsider):
        response = api.post(url(workspace, "from-job/"), {"job_id": str(job.id)}, format="json")
        assert response.status_code == 409 and not Recipe.objects.exists()
        assert api.post(url(workspace, "from-job/"), {"job_id": "nope"}, format="json").status_code == 400
        mine = WorkspaceFactory()
        MembershipFactory(workspace=mine, user=outsider, role=Role.OWNER)
        response = client_for(outsider).post(url(mine, "from-job/"), {"job_id": str(job.id)}, format="json")
        assert response.status_code == 404


class TestApply:
    def test_generate_form_data(self, workspace, recipe, loras):
        query = selectors.recipe_apply(recipe=Recipe.objects.get(id=recipe["id"]))
        assert query["model"] == WAN and query["resolution"] == "48x32" and query["steps"] == "4"
        assert query["prompt"].startswith("anime style, ohwx")
        # The "both" LoRA is a row in each section with its own weight.
        rows = zip(query.getlist("lora_id"), query.getlist("lora_weight"), query.getlist("lora_expert"), strict=True)
        assert list(rows) == [
            (str(loras[0].id), "0.80", "high"),
            (str(loras[0].id), "0.40", "low"),
            (str(loras[1].id), "1.00", "low"),
        ]

    def test_generate_page_prefills(self, client, owner, workspace, recipe, loras):
        client.force_login(owner)
        page = client.get(f"/w/{workspace.slug}/generate/?recipe={recipe['id']}")
        assert page.status_code == 200
        assert "anime style, ohwx, fine detail, a cat in the rain" in page.text
        assert client.get(f"/w/{workspace.slug}/generate/?recipe=999999").status_code == 404

    def test_apply_refuses_a_recipe_with_a_deleted_lora(self, client, owner, workspace, recipe, loras):
        LoRA.objects.filter(id=loras[0].id).update(deleted_at=timezone.now())
        client.force_login(owner)
        response = client.get(f"/w/{workspace.slug}/recipes/{recipe['id']}/apply/", follow=True)
        assert response.redirect_chain[-1][0] == f"/w/{workspace.slug}/recipes/{recipe['id']}/"
        assert "cannot run until it is fixed" in response.text
        assert "LoRA &#x27;Anime&#x27; has been deleted" in response.text


class TestPages:
    """The dashboard's recipe pages: list, edit (errors in place), delete, Save as recipe from the Generate form,
    roles and 404 across workspaces."""

    def test_list_and_edit(self, client, owner, workspace, recipe, loras):
        client.force_login(owner)
        listed = client.get(f"/w/{workspace.slug}/recipes/")
        assert listed.status_code == 200 and "Anime cat" in listed.text and "Apply" in listed.text
        page = f"/w/{workspace.slug}/recipes/{recipe['id']}/"
        fields = {"name": "Renamed", "prompt_template": "{trigger} dog", "negative_prompt": ""}
        rows = {"lora_0_weight": "0.5", "lora_0_expert": "both", "lora_0_weight_low": "0.25"}
        rows |= {"lora_1_weight": "3", "lora_1_expert": "low"}
        bad = client.post(page, fields | rows)
        assert bad.status_code == 400 and "weight must be between 0.0 and 2.0" in bad.text
        assert Recipe.objects.get().name == "Anime cat"
        saved = client.post(page, fields | rows | {"lora_1_weight": "1", "lora_1_remove": "on"})
        assert saved.status_code == 302
        stored = Recipe.objects.get()
        assert stored.name == "Renamed" and [(rl.weight, rl.weight_low) for rl in stored.recipe_loras.all()] == [
            (0.5, 0.25)
        ]
        assert client.post(f"{page}delete/").status_code == 302 and not Recipe.objects.exists()

    def test_save_from_the_generate_form(self, client, owner, workspace, loras):
        client.force_login(owner)
        form = {
            "model": WAN,
            "prompt": "a fox",
            "negative_prompt": "",
            "resolution": "32x32",
            "num_frames": "5",
            "fps": "8",
            "steps": "4",
            "guidance": "4",
            "guidance_2": "3",
            "seed": "",
            "lora_id": [str(loras[0].id)],
            "lora_weight": ["0.7"],
            "lora_expert": ["high"],
        }
        response = client.post(f"/w/{workspace.slug}/recipes/new/", form)
        assert response.status_code == 302, response.content[:2000]
        recipe = Recipe.objects.get()
        assert recipe.name == "a fox" and recipe.params["steps"] == 4 and "seed" not in recipe.params
        assert [(rl.lora_ref, rl.weight, rl.expert) for rl in recipe.recipe_loras.all()] == [(loras[0].id, 0.7, "high")]
        assert not GenerationJob.objects.exists()
        # Invalid: the Generate page again, with the error in place, and nothing saved.
        response = client.post(f"/w/{workspace.slug}/recipes/new/", form | {"steps": "99"})
        assert response.status_code == 400 and "steps must be between 1 and 10" in response.text
        assert Recipe.objects.count() == 1

    def test_viewer_reads_only_and_outsider_gets_404(self, client, member_of, outsider, workspace, recipe):
        client.force_login(member_of(Role.VIEWER))
        page = f"/w/{workspace.slug}/recipes/{recipe['id']}/"
        response = client.get(page)
        assert response.status_code == 200 and "Save recipe" not in response.text
        assert client.post(page, {"name": "x", "prompt_template": "y"}).status_code == 403
        assert client.post(f"{page}delete/").status_code == 403
        assert client.post(f"/w/{workspace.slug}/recipes/new/", {"prompt": "x"}).status_code == 403
        client.force_login(outsider)
        assert client.get(page).status_code == 404
        assert client.get(f"/w/{workspace.slug}/recipes/").status_code == 404
