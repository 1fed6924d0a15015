"""The usage counters behind the LoRA page's metrics (generation/usage.py): after every kind of event — a job created
with LoRAs or with none, a preview job, a job finishing succeeded, failed or cancelled, a rating given, changed and
removed, a job deleted, a LoRA purged — the counters the services kept equal what a rebuild from the history says.
And the rebuild itself: the management command, beat's task, and a repair after a write that bypassed the services."""

import pytest
from django.core.management import call_command
from django.db import transaction

from generation import services
from generation.models import GenerationJob, JobPurpose, OutputRating, UsageCounter
from generation.ratings.services import rating_delete, rating_set
from generation.tasks import usage_counters_rebuild as rebuild_task
from generation.usage import FIGURE_FIELDS, usage_counters_rebuild
from loras.metrics import lora_metrics, pair_metrics
from loras.models import LoRA
from loras.services.pairs import pair_create, pair_delete
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = pytest.mark.django_db

MODEL = "wan22-a14b-demo"


def snapshot(workspace) -> dict:
    """The workspace's counter rows that hold anything, by subject."""
    fields = ("lora_id", "pair_id", "model_key", *FIGURE_FIELDS, "last_used", "latest_output_id")
    rows = UsageCounter.objects.filter(workspace=workspace).values(*fields)
    return {
        subject(row.pop("lora_id"), row.pop("pair_id"), row.pop("model_key")): row
        for row in rows
        if any(row[name] for name in FIGURE_FIELDS) or row["last_used"]
    }


def subject(lora_id, pair_id, model_key) -> tuple:
    if lora_id:
        return ("lora", lora_id)
    return ("pair", pair_id) if pair_id else ("base", model_key)


def assert_kept_equal_to_history(workspace) -> dict:
    kept = snapshot(workspace)
    savepoint = transaction.savepoint()
    usage_counters_rebuild(workspace_id=workspace.id)
    rebuilt = snapshot(workspace)
    transaction.savepoint_rollback(savepoint)
    assert kept == rebuilt
    return kept


@pytest.fixture
def actors(workspace, member_of):
    return {role: workspace.memberships.get(user=member_of(role)) for role in (Role.OWNER, Role.MEMBER, Role.VIEWER)}


@pytest.fixture
def loras(demo_models, actors, tmp_path):
    owner = actors[Role.OWNER]
    return [
        ingest_ready(actor=owner, path=write_lora(tmp_path / f"{name}.safetensors", family="wan-demo", seed=seed))
        for seed, name in enumerate(("ink", "rust"))
    ]


def create(actor, *requests, purpose=JobPurpose.USER) -> GenerationJob:
    return services.generation_create(
        actor=actor, model=MODEL, prompt="a lighthouse", params={"steps": 1}, loras=list(requests), purpose=purpose
    )


def finish(job, outcome: str) -> None:
    services.job_claim(job_id=job.id, worker="w1")
    if outcome == "succeeded":
        services.job_succeed(job_id=job.id, output_key="", poster_key="", timings={})
    else:
        services.job_fail(job_id=job.id, error="out of memory", timings={}, cancelled=outcome == "cancelled")
    job.refresh_from_db()


def test_every_event_keeps_the_counters_equal_to_the_history(workspace, actors, loras):
    owner, member, viewer = actors[Role.OWNER], actors[Role.MEMBER], actors[Role.VIEWER]
    ink, rust = loras
    one = create(member, services.LoRARequest(ink.id))
    # One LoRA in both experts with its own weights, beside another: each LoRA counts the job once.
    both = create(
        owner, services.LoRARequest(ink.id, expert="both", weight=1.0, weight_low=0.5), services.LoRARequest(rust.id)
    )
    plain, plain_too = create(member), create(owner)
    create(owner, services.LoRARequest(rust.id), purpose=JobPurpose.PREVIEW)  # not a use: counts nowhere
    kept = assert_kept_equal_to_history(workspace)
    assert kept[("lora", ink.id)]["generations"] == 2
    assert kept[("lora", rust.id)]["generations"] == 1
    assert kept[("base", MODEL)]["generations"] == 2

    finish(one, "succeeded")
    finish(both, "failed")
    finish(plain, "succeeded")
    services.generation_cancel(actor=owner, job=plain_too)
    plain_too.refresh_from_db()
    kept = assert_kept_equal_to_history(workspace)
    assert (kept[("lora", ink.id)]["succeeded"], kept[("lora", ink.id)]["failed"]) == (1, 1)
    assert (kept[("base", MODEL)]["succeeded"], kept[("base", MODEL)]["failed"]) == (1, 0)

    rating_set(actor=owner, job=one, stars=5)
    rating_set(actor=viewer, job=one, stars=3)
    rating_set(actor=member, job=plain, stars=4)
    kept = assert_kept_equal_to_history(workspace)
    rating_set(actor=owner, job=one, stars=2)  # changed
    rating_delete(actor=viewer, job=one)  # removed
    kept = assert_kept_equal_to_history(workspace)
    assert [kept[("lora", ink.id)][f"stars_{stars}"] for stars in (1, 2, 3, 4, 5)] == [0, 1, 0, 0, 0]
    assert kept[("base", MODEL)]["stars_4"] == 1
    assert lora_metrics(lora=ink).headline == "2.0 ★ (1 rating) vs 4.0 ★ for the base model (1)"

    # Deleting the newest of a LoRA's jobs takes its figures, its ratings' and its time of last use out.
    rating_set(actor=member, job=one, stars=5)
    newest = create(owner, services.LoRARequest(ink.id))
    finish(newest, "succeeded")
    rating_set(actor=owner, job=newest, stars=1)
    services.job_delete(actor=owner, job=newest)
    services.job_delete(actor=owner, job=plain)
    kept = assert_kept_equal_to_history(workspace)
    assert kept[("lora", ink.id)]["last_used"] == both.created_at
    assert ("base", MODEL) in kept and kept[("base", MODEL)]["generations"] == 1

    # A purged LoRA's jobs keep their snapshot but count for no LoRA's row (and not for the base model).
    LoRA.objects.filter(id=rust.id).delete()
    kept = assert_kept_equal_to_history(workspace)
    assert ("lora", rust.id) not in kept
    assert kept[("lora", ink.id)]["generations"] == 2


def test_a_pair_counts_each_job_once_from_its_history_on(workspace, actors, loras):
    owner = actors[Role.OWNER]
    ink, rust = loras
    alone = create(owner, services.LoRARequest(ink.id))
    both = create(owner, services.LoRARequest(ink.id), services.LoRARequest(rust.id))
    finish(both, "succeeded")
    rating_set(actor=owner, job=both, stars=5)
    pair = pair_create(actor=owner, high=ink, low=rust)  # the history before the pair counts
    kept = assert_kept_equal_to_history(workspace)
    assert (kept[("pair", pair.id)]["generations"], kept[("pair", pair.id)]["stars_5"]) == (2, 1)

    later = create(owner, services.LoRARequest(rust.id))
    finish(later, "failed")
    services.job_delete(actor=owner, job=later)
    finish(alone, "succeeded")
    rating_set(actor=owner, job=alone, stars=3)
    kept = assert_kept_equal_to_history(workspace)
    assert kept[("pair", pair.id)]["generations"] == 2
    metrics = pair_metrics(pair=pair)
    assert (metrics.lora.succeeded, metrics.lora.rating_count) == (2, 2)
    assert metrics.headline == "4.0 ★ (2 ratings) vs no ratings yet for the base model"

    pair_delete(actor=owner, pair=pair)
    assert ("pair", pair.id) not in assert_kept_equal_to_history(workspace)


def test_the_rebuild_repairs_what_bypassed_the_services(workspace, actors, loras, capsys):
    owner = actors[Role.OWNER]
    [ink, _] = loras
    job = create(owner, services.LoRARequest(ink.id))
    finish(job, "succeeded")
    rating_set(actor=owner, job=job, stars=5)
    OutputRating.objects.filter(job=job).delete()  # as deleting the user in the admin would
    assert lora_metrics(lora=ink).lora.rating_count == 1

    call_command("usage_rebuild", "--workspace", workspace.slug)
    assert f"{workspace.slug}: " in capsys.readouterr().out
    assert lora_metrics(lora=ink).lora.rating_count == 0

    UsageCounter.objects.filter(lora=ink).update(generations=99)
    assert rebuild_task() >= 1
    assert lora_metrics(lora=ink).lora.generations == 1


def test_the_command_names_an_unknown_workspace():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No workspace with the slug 'nowhere'"):
        call_command("usage_rebuild", "--workspace", "nowhere")


@pytest.mark.django_db(transaction=True)
def test_jobs_created_side_by_side_count_each_once(workspace, actors, loras, monkeypatch, settings):
    """Eight threads create the first jobs of a LoRA (and of the base model) at once: each creates the counter row
    it needs or finds the other's (ON CONFLICT DO NOTHING), and every increment lands."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from django.db import connection

    if not settings.USING_POSTGRES:
        pytest.skip("side by side transactions need PostgreSQL (required in CI)")
    monkeypatch.setattr("generation.services._send_job", lambda job: None)  # no worker takes them
    member, [ink, _] = actors[Role.MEMBER], loras
    barrier = Barrier(8)

    def one(index: int) -> None:
        try:
            barrier.wait()
            create(member, *([services.LoRARequest(ink.id)] if index % 2 else []))
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(8)))
    kept = assert_kept_equal_to_history(workspace)
    assert kept[("lora", ink.id)]["generations"] == 4 and kept[("base", MODEL)]["generations"] == 4
