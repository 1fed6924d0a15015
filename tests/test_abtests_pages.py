"""A/B test pages: the form pre-filled from ?a=&b=, cost before starting, the results with the test and α stated,
the blind vote (no names, sides per member, one vote per pair), roles and cross-workspace 404."""

import pytest

from generation.models import ABPair, ABTest, ABVote, GenerationJob, JobStatus
from tests.broker_fixtures import broker_down  # noqa: F401  (a fixture)
from tests.factories import LoRAFactory, MembershipFactory, WorkspaceFactory
from workspaces.models import Role

pytestmark = pytest.mark.django_db

WAN = "wan22-a14b-demo"


@pytest.fixture(autouse=True)
def models_built(demo_models):
    return demo_models


@pytest.fixture
def versions(workspace):
    return (
        LoRAFactory(workspace=workspace, name="anime", version="1", base_model="wan-demo"),
        LoRAFactory(workspace=workspace, name="anime", version="2", base_model="wan-demo"),
    )


def form_data(versions, **extra) -> dict:
    v1, v2 = versions
    return {
        "model": WAN,
        "lora_a": v1.id,
        "weight_a": "1",
        "lora_b": v2.id,
        "weight_b": "1",
        "prompts": "a lighthouse\na fox in snow\n",
        "seeds": "1, 2",
        "steps": "2",
        **extra,
    }


def test_quick_ab_test_prefilled_cost_then_start(client, workspace, owner, versions):
    v1, v2 = versions
    client.force_login(owner)
    page = client.get(f"/w/{workspace.slug}/abtests/new/?a={v1.id}&b={v2.id}").content.decode()
    assert f'<option value="{v2.id}" selected>' in page.split('name="lora_b"')[1]
    response = client.post(f"/w/{workspace.slug}/abtests/new/", {**form_data(versions), "preview": "1"})
    assert "This A/B test queues <strong>8 jobs</strong>" in response.content.decode()
    assert not ABTest.objects.exists()
    response = client.post(f"/w/{workspace.slug}/abtests/new/", form_data(versions))
    test = ABTest.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/w/{workspace.slug}/abtests/{test.id}/"
    page = client.get(response["Location"]).content.decode()
    assert "anime v1 @ 1" in page and "Two-sided exact binomial test" in page and "α = 0.05" in page
    assert "Not enough votes yet" in page


def test_the_same_lora_twice_is_refused_in_place(client, workspace, owner, versions):
    client.force_login(owner)
    response = client.post(f"/w/{workspace.slug}/abtests/new/", form_data(versions, lora_b=versions[0].id))
    assert response.status_code == 400
    assert "A and B are the same stack" in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_results_poll_while_a_job_runs_and_stop_once_all_have_finished(client, workspace, owner, versions, member_of):
    client.force_login(owner)
    client.post(f"/w/{workspace.slug}/abtests/new/", form_data(versions))
    url = f"/w/{workspace.slug}/abtests/{ABTest.objects.get().id}/"
    page = client.get(url)
    assert 'id="abtest-live"' in page.content.decode() and 'hx-trigger="every 2s"' in page.content.decode()
    assert page["Vary"].count("HX-Request") == 1
    pair = ABPair.objects.first()
    GenerationJob.objects.filter(id__in=[pair.job_a_id, pair.job_b_id]).update(status=JobStatus.SUCCEEDED)
    ABVote.objects.create(pair=pair, user=member_of(Role.VIEWER), choice="a")
    part = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert part.lstrip().startswith('<div id="abtest-live"') and "<html" not in part
    assert "2 of 8 jobs finished · 1 voter" in part and 'hx-get="' + url + '"' in part
    GenerationJob.objects.update(status=JobStatus.SUCCEEDED)
    part = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "8 of 8 jobs finished" in part and "hx-trigger" not in part  # done: the part stops polling


def test_blind_vote_goes_pair_by_pair(client, workspace, owner, versions, member_of):
    client.force_login(owner)
    client.post(f"/w/{workspace.slug}/abtests/new/", form_data(versions))
    test = ABTest.objects.get()
    vote_url = f"/w/{workspace.slug}/abtests/{test.id}/vote/"
    assert "No pair is ready yet" in client.get(vote_url).content.decode()
    GenerationJob.objects.update(status=JobStatus.SUCCEEDED)

    viewer = member_of(Role.VIEWER)
    client.force_login(viewer)  # viewers vote
    page = client.get(vote_url).content.decode()
    assert "Left is better" in page and "Right is better" in page and "Tie" in page
    assert "anime" not in page  # no names on the voting page
    pair_id = int(page.split('name="pair" value="')[1].split('"')[0])
    response = client.post(vote_url, {"pair": pair_id, "choice": "left"})
    assert response.status_code == 302
    assert ABVote.objects.get(user=viewer, pair_id=pair_id)
    page = client.get(vote_url).content.decode()
    assert "You have voted on 1 of 4 pairs" in page and f'value="{pair_id}"' not in page
    for pair in ABPair.objects.exclude(id=pair_id):
        client.post(vote_url, {"pair": pair.id, "choice": "tie"})
    assert "You have voted on every ready pair." in client.get(vote_url).content.decode()
    assert ABVote.objects.filter(user=viewer).count() == 4
    response = client.post(vote_url, {"pair": pair_id, "choice": "sideways"}, follow=True)
    assert "A vote is left, right or tie." in response.content.decode()


def test_viewer_cannot_create(client, workspace, versions, member_of):
    client.force_login(member_of(Role.VIEWER))
    assert client.get(f"/w/{workspace.slug}/abtests/new/").status_code == 403
    assert client.post(f"/w/{workspace.slug}/abtests/new/", form_data(versions)).status_code == 403


def test_another_workspace_is_404(client, workspace, owner, versions, outsider):
    client.force_login(owner)
    client.post(f"/w/{workspace.slug}/abtests/new/", form_data(versions))
    test = ABTest.objects.get()
    GenerationJob.objects.update(status=JobStatus.SUCCEEDED)
    other = MembershipFactory(user=outsider, workspace=WorkspaceFactory(), role=Role.OWNER).workspace
    client.force_login(outsider)
    for slug in (workspace.slug, other.slug):
        assert client.get(f"/w/{slug}/abtests/{test.id}/").status_code == 404
        assert client.get(f"/w/{slug}/abtests/{test.id}/vote/").status_code == 404
        assert client.post(f"/w/{slug}/abtests/{test.id}/vote/", {"pair": 1, "choice": "left"}).status_code == 404
    assert not ABVote.objects.exists()


def test_compare_page_shows_ab_results_and_quick_ab_test(client, workspace, owner, versions, member_of):
    v1, v2 = versions
    client.force_login(owner)
    compare = f"/w/{workspace.slug}/loras/compare/?ids={v1.id}&ids={v2.id}"
    page = client.get(compare).content.decode()
    assert "No A/B test between these versions yet" in page
    assert f'href="/w/{workspace.slug}/abtests/new/?a={v1.id}&amp;b={v2.id}">Quick A/B test</a>' in page

    client.post(f"/w/{workspace.slug}/abtests/new/", form_data(versions, seeds="1, 2, 3, 4, 5, 6"))
    GenerationJob.objects.update(status=JobStatus.SUCCEEDED)
    voter = member_of(Role.MEMBER)
    for index, pair in enumerate(ABPair.objects.order_by("id")):
        ABVote.objects.create(pair=pair, user=voter, choice="b" if index < 11 else "a")  # 11 B, 1 A
        if index < 10:
            ABVote.objects.create(pair=pair, user=owner, choice="b")
    page = client.get(compare).content.decode()
    assert "A: anime v1 @ 1 · B: anime v2 @ 1" in page
    # 1 of 22 decisive votes for A: 5 % (Wilson 0.8–22 %), p = 2 · 23 / 2²² → B is better.
    assert "B is better" in page and "two-sided exact binomial test" in page and "α = 0.05" in page
    client.force_login(member_of(Role.VIEWER))
    assert "Quick A/B test</a>" not in client.get(compare).content.decode()


@pytest.mark.usefixtures("broker_down")
def test_broker_down_shows_the_job_queue_message_and_starts_nothing(client, workspace, owner, versions):
    client.force_login(owner)
    response = client.post(f"/w/{workspace.slug}/abtests/new/", form_data(versions))
    assert response.status_code == 503
    page = response.content.decode()
    assert 'role="alert"' in page and "The job queue is unavailable; no A/B test was started" in page
    assert "a fox in snow" in page  # the form is kept, to start again later
    assert not ABTest.objects.exists() and not GenerationJob.objects.exists()
