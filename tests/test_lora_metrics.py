"""Adapter metrics (loras/metrics.py): the LoRA's figures and the base model's alone, right to the rating, and a
fixed number of queries whatever the history (5 jobs or 50): they are read from the usage counters
(generation/usage.py; the factories rebuild them from the rows they write, tests/test_usage_counters.py holds the
services' upkeep equal to that)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation.model_registry import model_registry
from loras.metrics import lora_metrics, lora_usage, pair_metrics
from loras.models import LoRAPair
from tests.factories import GenerationJobFactory, JobLoRAFactory, LoRAFactory, OutputRatingFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def lora(workspace):
    return LoRAFactory(workspace=workspace, base_model="wan-demo")


def used_in_job(lora, *, status="succeeded", stars=(), position=0, job=None):
    job = job or GenerationJobFactory(workspace=lora.workspace, status=status)
    JobLoRAFactory(job=job, lora=lora, position=position)
    for value in stars:
        OutputRatingFactory(job=job, stars=value)
    return job


def test_figures_for_the_lora_and_the_base_model(workspace, lora):
    used_in_job(lora, stars=(5, 4))
    used_in_job(lora, stars=(3,))
    last = used_in_job(lora, status="failed")
    used_in_job(lora, status="cancelled")
    # The same LoRA twice in one job (both experts) counts that job and its ratings once.
    twice = used_in_job(lora, stars=(4,))
    used_in_job(lora, job=twice, position=1)
    # The base model alone: jobs on the family's models with no LoRA.
    for stars in ((2,), (3, 3), ()):
        job = GenerationJobFactory(workspace=workspace, model_key="wan-ti2v-demo")
        for value in stars:
            OutputRatingFactory(job=job, stars=value)
    GenerationJobFactory(workspace=workspace, status="failed")
    # Not counted: another LoRA's job, another family's base job, another workspace's base job.
    used_in_job(LoRAFactory(workspace=workspace), stars=(1,))
    OutputRatingFactory(job=GenerationJobFactory(workspace=workspace, model_key="flux-demo"), stars=1)
    OutputRatingFactory(job=GenerationJobFactory(model_key="wan22-a14b-demo"), stars=1)

    metrics = lora_metrics(lora=lora)
    assert metrics.lora.generations == 5
    assert (metrics.lora.succeeded, metrics.lora.failed) == (3, 1)
    assert metrics.lora.rating_count == 4
    assert metrics.lora.rating_average == pytest.approx(4.0)
    assert metrics.lora.histogram == (0, 0, 1, 2, 1)
    assert metrics.lora.last_used >= last.created_at
    assert (metrics.base.generations, metrics.base.succeeded, metrics.base.failed) == (4, 3, 1)
    assert metrics.base.histogram == (0, 1, 2, 0, 0)
    assert metrics.base.rating_average == pytest.approx(8 / 3)
    family = {model.display_name for model in model_registry().values() if model.family == "wan-demo"}
    assert set(metrics.base_models) == family and "Wan single expert (demo)" in family
    assert metrics.headline == "4.0 ★ (4 ratings) vs 2.7 ★ for the base model (3)"


def test_no_history(lora):
    metrics = lora_metrics(lora=lora)
    assert metrics.lora.generations == 0
    assert metrics.lora.rating_average is None
    assert metrics.lora.histogram == (0, 0, 0, 0, 0)
    assert metrics.lora.last_used is None
    assert metrics.headline == "No ratings yet; no ratings yet for the base model"


def test_usage_of_many_loras_at_once(workspace):
    first, second, unused = LoRAFactory.create_batch(3, workspace=workspace)
    used_in_job(first, stars=(5,))
    used_in_job(second, stars=(1, 2))
    usage = lora_usage(lora_ids=[first.id, second.id, unused.id])
    assert usage[first.id].rating_average == 5.0
    assert usage[second.id].histogram == (1, 1, 0, 0, 0)
    assert usage[unused.id].generations == 0


@pytest.mark.parametrize("jobs", [5, 50])
def test_a_fixed_number_of_queries_whatever_the_history(lora, django_assert_max_num_queries, jobs):
    raters = UserFactory.create_batch(3)
    for index in range(jobs):
        job = used_in_job(lora, status="failed" if index % 5 == 0 else "succeeded")
        for rater in raters[: index % 4]:
            OutputRatingFactory(job=job, user=rater, stars=1 + index % 5)
        base = GenerationJobFactory(workspace=lora.workspace)
        OutputRatingFactory(job=base, user=raters[0], stars=3)
    with django_assert_max_num_queries(2):  # the LoRA's counter row and its base model's rows
        metrics = lora_metrics(lora=lora)
    assert metrics.lora.generations == jobs
    assert metrics.base.rating_count == jobs


def test_detail_api_and_page_show_the_metrics(api, client, owner, lora):
    used_in_job(lora, stars=(5, 3))
    OutputRatingFactory(job=GenerationJobFactory(workspace=lora.workspace), stars=2)
    body = api.get(f"/api/v1/workspaces/{lora.workspace.slug}/loras/{lora.id}/").json()
    assert body["metrics"]["lora"]["histogram"] == [0, 0, 1, 0, 1]
    assert body["metrics"]["lora"]["rating_average"] == 4.0
    assert body["metrics"]["base"]["rating_count"] == 1
    assert body["metrics"]["headline"] == "4.0 ★ (2 ratings) vs 2.0 ★ for the base model (1)"

    client.force_login(owner)
    html = client.get(f"/w/{lora.workspace.slug}/loras/{lora.id}/").content.decode()
    assert "4.0 ★ (2 ratings) vs 2.0 ★ for the base model (1)" in html
    assert '<svg class="histogram"' in html
    assert "5 stars, 50 % for this LoRA and 0 % for the base model" in html


def test_another_workspaces_lora_is_404(client_for, outsider, lora):
    response = client_for(outsider).get(f"/api/v1/workspaces/{lora.workspace.slug}/loras/{lora.id}/")
    assert response.status_code == 404


def test_the_lora_page_stays_within_the_same_queries_whatever_the_history(client, owner, workspace):
    def page_queries(jobs: int) -> int:
        lora = LoRAFactory(workspace=workspace, base_model="wan-demo", created_by=owner)
        for index in range(jobs):
            used_in_job(lora, stars=(1 + index % 5,))
            OutputRatingFactory(job=GenerationJobFactory(workspace=workspace), stars=3)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/w/{workspace.slug}/loras/{lora.id}/").status_code == 200
        return len(queries)

    client.force_login(owner)
    page_queries(1)  # the first request's session and cache look-ups
    assert page_queries(50) == page_queries(5)


def test_pair_metrics_count_a_job_with_both_halves_once(api, workspace, owner, django_assert_max_num_queries):
    high = LoRAFactory(workspace=workspace, base_model="wan-demo", expert="high", created_by=owner)
    low = LoRAFactory(workspace=workspace, base_model="wan-demo", expert="low", created_by=owner)
    pair = LoRAPair.objects.create(workspace=workspace, name="Ink", high=high, low=low)
    both = used_in_job(high, stars=(5, 4))
    used_in_job(low, job=both, position=1)
    used_in_job(low, status="failed")
    OutputRatingFactory(job=GenerationJobFactory(workspace=workspace), stars=2)
    with django_assert_max_num_queries(5):
        metrics = pair_metrics(pair=pair)
    assert (metrics.lora.generations, metrics.lora.succeeded, metrics.lora.failed) == (2, 1, 1)
    assert metrics.lora.histogram == (0, 0, 0, 1, 1)
    assert metrics.headline == "4.5 ★ (2 ratings) vs 2.0 ★ for the base model (1)"
    body = api.get(f"/api/v1/workspaces/{workspace.slug}/pairs/{pair.id}/").json()
    assert body["metrics"]["lora"]["rating_count"] == 2
