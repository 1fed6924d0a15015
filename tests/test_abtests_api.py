"""A/B tests over the API: cost before starting, paired jobs (same prompt, seed and params for A and B), bounds,
bad input with nothing queued, blind pairs in a stable per-member order, votes (viewers too; one per member per
pair, changeable; 409 before both outputs exist), results (Wilson interval, binomial p, ties apart, per prompt,
'not enough votes yet'), roles and cross-workspace 404."""

import pytest
from django.test import override_settings

from generation.experiments import selectors
from generation.models import ABPair, ABTest, ABVote, GenerationJob, JobStatus
from tests.broker_fixtures import broker_down, broker_refuses_sends  # noqa: F401  (fixtures)
from tests.factories import LoRAFactory, MembershipFactory, UserFactory, WorkspaceFactory
from workspaces.models import Role

pytestmark = pytest.mark.django_db

WAN = "wan22-a14b-demo"


@pytest.fixture(autouse=True)
def models_built(demo_models):
    return demo_models


def url(workspace, suffix="") -> str:
    return f"/api/v1/workspaces/{workspace.slug}/abtests/{suffix}"


@pytest.fixture
def versions(workspace):
    return (
        LoRAFactory(workspace=workspace, name="anime", version="1", base_model="wan-demo"),
        LoRAFactory(workspace=workspace, name="anime", version="2", base_model="wan-demo"),
    )


def body(versions, **extra) -> dict:
    v1, v2 = versions
    return {
        "model": WAN,
        "prompts": ["a lighthouse", "a fox in snow"],
        "seeds": [1, 2, 3],
        "params": {"steps": 2},
        "stack_a": {"loras": [{"lora_id": v1.id, "weight": 0.8}]},
        "stack_b": {"loras": [{"lora_id": v2.id, "weight": 0.8}]},
        **extra,
    }


def succeed_all(test_id: int) -> None:
    GenerationJob.objects.filter(status=JobStatus.QUEUED).update(status=JobStatus.SUCCEEDED)


def test_dry_run_then_paired_jobs(api, workspace, versions):
    response = api.post(url(workspace), body(versions, dry_run=True), format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"dry_run": True, "jobs": 12, "limit": 100}
    assert not ABTest.objects.exists() and not GenerationJob.objects.exists()

    response = api.post(url(workspace), body(versions), format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["label_a"], data["label_b"]) == ("anime v1 @ 0.8", "anime v2 @ 0.8")
    assert (data["jobs_total"], data["jobs_finished"]) == (12, 0)
    assert data["overall"]["verdict"] == "not enough votes yet"
    for pair in ABPair.objects.select_related("job_a", "job_b"):
        a, b = pair.job_a, pair.job_b
        assert (a.prompt, a.params, a.negative_prompt) == (b.prompt, b.params, b.negative_prompt)
        assert a.params["seed"] == pair.seed and a.params["steps"] == 2
        assert [jl.lora_ref for jl in a.job_loras.all()] == [versions[0].id]
        assert [jl.lora_ref for jl in b.job_loras.all()] == [versions[1].id]
    assert api.get(url(workspace)).json()["results"][0]["pairs"] == 6


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompts": []}, "prompts"),
        ({"prompts": ["ok", " "]}, "prompts"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"seeds": [-1]}, "seeds"),
        ({"stack_b": {"loras": [{"lora_id": 0, "weight": 0.8}]}}, "stack_b"),
        ({"stack_a": {"loras": [{"lora_id": 0, "weight": 3}]}}, "stack_a"),
        ({"params": {"steps": 99}}, "params.steps"),
        ({"model": "nope"}, "model"),
    ],
)
def test_bad_input_is_400_and_nothing_queued(api, workspace, versions, change, field):
    data = body(versions, **change)
    for side in ("stack_a", "stack_b"):
        for entry in data[side]["loras"]:
            if entry["lora_id"] == 0:
                entry["lora_id"] = versions[0].id if side == "stack_b" else versions[1].id
    response = api.post(url(workspace), data, format="json")
    assert response.status_code in (400, 404), response.content
    if response.status_code == 400:
        assert any(key.startswith(field) for key in response.json()["errors"]), response.json()
    assert not ABTest.objects.exists() and not GenerationJob.objects.exists()


@override_settings(LORASITE_ABTEST_MAX_JOBS=10)
def test_more_jobs_than_the_limit(api, workspace, versions):
    response = api.post(url(workspace), body(versions, dry_run=True), format="json")
    assert response.status_code == 400
    assert response.json()["message"] == "At most 10 jobs per A/B test; this one needs 12"


def test_blind_pairs_and_votes(api, workspace, versions, owner, member_of, client_for):
    test_id = api.post(url(workspace), body(versions), format="json").json()["id"]
    pairs = api.get(url(workspace, f"{test_id}/pairs/")).json()
    assert len(pairs) == 6 and not any(p["ready"] for p in pairs)
    assert "anime" not in str(pairs)  # blind: no names
    vote_url = url(workspace, f"{test_id}/pairs/{pairs[0]['id']}/vote/")
    assert api.put(vote_url, {"choice": "left"}, format="json").status_code == 409  # not generated yet

    succeed_all(test_id)
    viewer = member_of(Role.VIEWER)
    viewer_api = client_for(viewer)
    response = viewer_api.put(vote_url, {"choice": "left"}, format="json")  # viewers judge too
    assert response.status_code == 200, response.content
    assert response.json()["my_vote"] == "left"
    pair = ABPair.objects.get(id=pairs[0]["id"])
    a_left = selectors.a_is_left(pair_id=pair.id, user_id=viewer.id)
    assert ABVote.objects.get(user=viewer).choice == ("a" if a_left else "b")
    # The order is stable per member: the same page twice shows the same sides.
    assert (
        viewer_api.get(url(workspace, f"{test_id}/pairs/")).json()
        == viewer_api.get(url(workspace, f"{test_id}/pairs/")).json()
    )
    # Again: changes the vote, still one per member per pair.
    assert viewer_api.put(vote_url, {"choice": "tie"}, format="json").json()["my_vote"] == "tie"
    assert ABVote.objects.filter(user=viewer).count() == 1 and ABVote.objects.get(user=viewer).choice == "tie"
    for bad in ("up", "", None, 1):
        assert viewer_api.put(vote_url, {"choice": bad}, format="json").status_code == 400


def test_results_wilson_binomial_ties_and_per_prompt(api, workspace, versions):
    test_id = api.post(url(workspace), body(versions, seeds=[1, 2, 3, 4, 5, 6]), format="json").json()["id"]
    succeed_all(test_id)
    pairs = list(ABPair.objects.filter(test_id=test_id).order_by("prompt_index", "seed"))
    voters = [UserFactory() for _ in range(2)]
    for user in voters:
        MembershipFactory(user=user, workspace=workspace, role=Role.MEMBER)
    # Prompt 0: A wins 6 pairs × 2 voters = 12 − 2 turned to B = 10 A, 2 B. Prompt 1: 3 ties, 9 A.
    choices = {0: ["a"] * 10 + ["b"] * 2, 1: ["tie"] * 3 + ["a"] * 9}
    for prompt_index, seq in choices.items():
        cells = [(pair, user) for pair in pairs if pair.prompt_index == prompt_index for user in voters]
        for (pair, user), choice in zip(cells, seq, strict=True):
            ABVote.objects.create(pair=pair, user=user, choice=choice)
    data = api.get(url(workspace, f"{test_id}/")).json()
    overall = data["overall"]
    assert (overall["wins_a"], overall["wins_b"], overall["ties"]) == (19, 2, 3)
    assert overall["win_rate_a"] == pytest.approx(19 / 21)
    # Wilson 19/21: centre (0.904762 + 3.841459/42) / (1 + 3.841459/21) = 0.842170; half-width 0.131311.
    assert overall["ci_low"] == pytest.approx(0.710859, abs=1e-5)
    assert overall["ci_high"] == pytest.approx(0.973481, abs=1e-5)
    # Binomial two-sided: 2 · Σ_{k≤2} C(21,k) / 2²¹ = 2 · (1 + 21 + 210) / 2097152.
    assert overall["p_value"] == pytest.approx(464 / 2097152)
    assert overall["verdict"] == "A is better"
    first, second = data["per_prompt"]
    assert first["label"] == "a lighthouse" and (first["wins_a"], first["wins_b"]) == (10, 2)
    assert second["ties"] == 3 and second["wins_a"] == 9 and second["verdict"] == "not enough votes yet"
    assert data["voters"] == 2


def test_viewer_cannot_create(workspace, versions, member_of, client_for):
    response = client_for(member_of(Role.VIEWER)).post(url(workspace), body(versions), format="json")
    assert response.status_code == 403 and not ABTest.objects.exists()


def test_another_workspace_is_404(api, workspace, versions, outsider, client_for):
    test_id = api.post(url(workspace), body(versions), format="json").json()["id"]
    succeed_all(test_id)
    pair_id = ABPair.objects.first().id
    other = MembershipFactory(user=outsider, workspace=WorkspaceFactory(), role=Role.OWNER).workspace
    client = client_for(outsider)
    for ws in (workspace, other):
        assert client.get(url(ws, f"{test_id}/")).status_code == 404
        assert client.get(url(ws, f"{test_id}/pairs/")).status_code == 404
        assert (
            client.put(url(ws, f"{test_id}/pairs/{pair_id}/vote/"), {"choice": "left"}, format="json").status_code
            == 404
        )
    assert not ABVote.objects.exists()
    # Their own workspace, stacks naming LoRAs of another: 400, nothing queued.
    assert client.post(url(other), body(versions), format="json").status_code == 400
    assert ABTest.objects.count() == 1


def test_a_lora_against_the_base_model(api, workspace, versions):
    data = body(versions, stack_a={"loras": []}, seeds=[1])
    response = api.post(url(workspace), data, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["label_a"] == "Base model"
    assert not any(pair.job_a.job_loras.exists() for pair in ABPair.objects.all())  # two prompts, one seed


@pytest.mark.usefixtures("broker_down")
def test_broker_down_is_503_naming_the_job_queue_and_leaves_nothing(api, workspace, versions):
    response = api.post(url(workspace), body(versions), format="json")
    assert response.status_code == 503 and response["Content-Type"] == "application/json"
    data = response.json()
    assert (data["code"], data["service"]) == ("service_unavailable", "job queue")
    assert data["message"] == (
        "The job queue is unavailable; no A/B test was started and nothing was saved. Try again shortly."
    )
    assert not ABTest.objects.exists() and not ABPair.objects.exists() and not GenerationJob.objects.exists()
    assert api.post(url(workspace), body(versions, dry_run=True), format="json").json()["jobs"] == 12


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("broker_refuses_sends")
def test_a_broker_failing_after_the_check_keeps_the_whole_test_for_beat(api, workspace, versions):
    response = api.post(url(workspace), body(versions), format="json")
    assert response.status_code == 503, response.content
    data = response.json()
    assert data["service"] == "job queue" and data["message"] == (
        "The job queue is unavailable; your A/B test is saved and its jobs will start when it is back."
    )
    test = ABTest.objects.get(id=data["abtest_id"])
    assert test.pairs.count() == 6
    jobs = GenerationJob.objects.filter(status=JobStatus.QUEUED, enqueued_at__isnull=True)
    assert jobs.count() == 12
