"""Ratings over the API and the dashboard's stars control: set, change, remove; 1–5 only; one per member per output;
viewers rate; only a succeeded job; another workspace's job is a 404; the job API's `rating` in one query a page."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation.models import OutputRating
from tests.factories import GenerationJobFactory, MembershipFactory, OutputRatingFactory, WorkspaceFactory
from workspaces.models import Role

pytestmark = pytest.mark.django_db


def rating_url(job) -> str:
    return f"/api/v1/workspaces/{job.workspace.slug}/generations/{job.id}/rating/"


@pytest.fixture
def job(workspace):
    return GenerationJobFactory(workspace=workspace)


def test_rate_change_and_remove(api, job, owner):
    response = api.put(rating_url(job), {"stars": 4}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"mine": 4, "average": 4.0, "count": 1}

    response = api.put(rating_url(job), {"stars": 2}, format="json")
    assert response.json() == {"mine": 2, "average": 2.0, "count": 1}
    assert OutputRating.objects.get(job=job, user=owner).stars == 2

    assert api.delete(rating_url(job)).status_code == 204
    assert not OutputRating.objects.filter(job=job).exists()
    response = api.delete(rating_url(job))
    assert response.status_code == 404
    assert response.json()["message"] == "You have not rated this output."


def test_average_over_members_and_mine_per_member(job, member_of, client_for):
    OutputRatingFactory(job=job, stars=5)
    OutputRatingFactory(job=job, stars=2)
    viewer = member_of(Role.VIEWER)
    response = client_for(viewer).put(rating_url(job), {"stars": 5}, format="json")  # viewers judge too
    assert response.status_code == 200, response.content
    assert response.json() == {"mine": 5, "average": 4.0, "count": 3}

    detail = client_for(member_of(Role.MEMBER)).get(f"/api/v1/workspaces/{job.workspace.slug}/generations/{job.id}/")
    assert detail.json()["rating"] == {"mine": None, "average": 4.0, "count": 3}


@pytest.mark.parametrize("stars", [0, 6, -1, "four", None, 2.5])
def test_bad_stars_are_400_and_nothing_saved(api, job, stars):
    response = api.put(rating_url(job), {"stars": stars}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert "stars" in response.json()["errors"]
    assert not OutputRating.objects.exists()


def test_missing_stars_is_400(api, job):
    response = api.put(rating_url(job), {}, format="json")
    assert response.status_code == 400
    assert "stars" in response.json()["errors"]


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_only_succeeded_jobs_are_rated(api, workspace, status):
    job = GenerationJobFactory(workspace=workspace, status=status)
    response = api.put(rating_url(job), {"stars": 3}, format="json")
    assert response.status_code == 409
    assert status in response.json()["message"]
    assert not OutputRating.objects.exists()


def test_another_workspace_is_404(job, outsider, client_for):
    other = MembershipFactory(user=outsider, workspace=WorkspaceFactory(), role=Role.OWNER)
    client = client_for(outsider)
    assert client.put(rating_url(job), {"stars": 3}, format="json").status_code == 404
    # Their own workspace's slug with this job's id: still not theirs.
    url = f"/api/v1/workspaces/{other.workspace.slug}/generations/{job.id}/rating/"
    assert client.put(url, {"stars": 3}, format="json").status_code == 404
    assert client.delete(url).status_code == 404
    assert not OutputRating.objects.exists()


def test_anonymous_is_401(api_client, job):
    assert api_client.put(rating_url(job), {"stars": 3}, format="json").status_code == 401


def test_job_list_reads_ratings_in_one_query(api, workspace, owner):
    jobs = GenerationJobFactory.create_batch(6, workspace=workspace)
    for job in jobs:
        OutputRatingFactory(job=job, stars=3)
        OutputRatingFactory(job=job, user=owner, stars=5)
    with CaptureQueriesContext(connection) as queries:
        response = api.get(f"/api/v1/workspaces/{workspace.slug}/generations/")
    assert response.status_code == 200
    assert {row["id"]: row["rating"] for row in response.json()["results"]} == {
        str(job.id): {"mine": 5, "average": 4.0, "count": 2} for job in jobs
    }
    assert sum("generation_outputrating" in query["sql"] for query in queries.captured_queries) == 1


# --- the dashboard's stars control ----------------------------------------------------------------------------


def page_url(job) -> str:
    return f"/w/{job.workspace.slug}/jobs/{job.id}/rating/"


def test_stars_control_sets_and_clears(client, job, member_of):
    viewer = member_of(Role.VIEWER)
    client.force_login(viewer)
    response = client.post(page_url(job), {"stars": "3"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'aria-pressed="true" aria-label="3 stars"' in html
    assert "3.0 ★ · 1 rating" in html
    assert OutputRating.objects.get(job=job, user=viewer).stars == 3

    response = client.post(page_url(job), {"stars": ""}, headers={"HX-Request": "true"})
    assert "Not rated yet" in response.content.decode()
    assert not OutputRating.objects.exists()


def test_stars_control_without_htmx_goes_back(client, job, owner):
    client.force_login(owner)
    response = client.post(page_url(job), {"stars": "5", "next": f"/w/{job.workspace.slug}/jobs/"})
    assert response.status_code == 302
    assert response["Location"] == f"/w/{job.workspace.slug}/jobs/"
    assert OutputRating.objects.get(job=job).stars == 5


def test_stars_control_bad_input_and_other_workspace(client, job, owner, outsider):
    client.force_login(owner)
    response = client.post(page_url(job), {"stars": "9"}, headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert "A rating is 1 to 5 stars." in response.content.decode()
    client.force_login(outsider)
    assert client.post(page_url(job), {"stars": "3"}).status_code == 404
    assert not OutputRating.objects.exists()


def test_job_pages_show_the_control(client, job, owner):
    OutputRatingFactory(job=job, stars=4)
    client.force_login(owner)
    for url in (f"/w/{job.workspace.slug}/jobs/", f"/w/{job.workspace.slug}/jobs/{job.id}/"):
        html = client.get(url).content.decode()
        assert f'id="rating-{job.id}"' in html
        assert "4.0 ★ · 1 rating" in html
