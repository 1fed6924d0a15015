"""Sweeps over the API: cost before starting (dry run), one job per cell with only the axes differing, the cell
limit, every problem a 400 with nothing queued, roles, cancel as a whole, the contact sheet, cross-workspace 404."""

from datetime import timedelta
from io import BytesIO

import pytest
from django.test import override_settings
from django.utils import timezone
from PIL import Image

from generation.models import GenerationJob, JobStatus, Sweep, SweepCell
from generation.services import jobs_redispatch
from generation.tasks import generation_run
from lorasite.object_store import get_object_store
from tests.broker_fixtures import broker_down, broker_refuses_sends  # noqa: F401  (fixtures)
from tests.factories import LoRAFactory, MembershipFactory, WorkspaceFactory
from workspaces.models import Role

pytestmark = pytest.mark.django_db

WAN = "wan22-a14b-demo"


@pytest.fixture(autouse=True)
def models_built(demo_models):
    return demo_models


def url(workspace, suffix="") -> str:
    return f"/api/v1/workspaces/{workspace.slug}/sweeps/{suffix}"


@pytest.fixture
def lora(workspace):
    return LoRAFactory(workspace=workspace, name="anime", base_model="wan-demo", version="1")


def body(lora, **extra) -> dict:
    return {
        "model": WAN,
        "prompt": "a lighthouse",
        "params": {"steps": 2, "seed": 7, "width": 32, "height": 32, "num_frames": 5},
        "loras": [{"lora_id": lora.id, "expert": "high"}],
        "x_axis": {"kind": "weight", "lora_id": lora.id},
        **extra,
    }


def test_dry_run_answers_the_cost_and_queues_nothing(api, workspace, lora):
    response = api.post(url(workspace), body(lora, dry_run=True), format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"dry_run": True, "cells": 7, "limit": 36}  # 0, 0.25 … 1.5
    assert api.post(url(workspace) + "?dry_run=1", body(lora), format="json").json()["cells"] == 7
    assert not Sweep.objects.exists() and not GenerationJob.objects.exists()


def test_create_queues_one_job_per_cell(api, workspace, lora):
    other = LoRAFactory(workspace=workspace, name="detail", base_model="wan-demo")
    response = api.post(
        url(workspace),
        body(lora, y_axis={"kind": "weight", "lora_id": other.id, "values": [0.5, 1.0]}),
        format="json",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["total"], data["finished"], data["status"]) == (14, 0, "running")
    assert data["x_labels"][:3] == ["0.00", "0.25", "0.50"] and data["y_labels"] == ["0.50", "1.00"]
    assert data["x_title"] == "anime weight" and data["y_title"] == "detail weight"
    jobs = GenerationJob.objects.filter(sweep_cell__sweep_id=data["id"])
    assert jobs.count() == 14 and {j.status for j in jobs} == {JobStatus.QUEUED}
    assert {j.params["seed"] for j in jobs} == {7}  # one seed: only the axes differ
    cell = SweepCell.objects.get(sweep_id=data["id"], x=2, y=1)
    weights = {jl.lora_ref: jl.weight for jl in cell.job.job_loras.all()}
    assert weights == {lora.id: 0.5, other.id: 1.0}

    listed = api.get(url(workspace)).json()["results"]
    assert [(s["id"], s["total"], s["finished"]) for s in listed] == [(data["id"], 14, 0)]
    assert api.get(url(workspace, f"{data['id']}/")).json()["cells"][0]["status"] == "queued"


def test_steps_and_versions_axes(api, workspace, lora):
    v2 = LoRAFactory(workspace=workspace, name="anime", base_model="wan-demo", version="2")
    response = api.post(
        url(workspace),
        body(
            lora,
            x_axis={"kind": "steps", "values": [1, 3]},
            y_axis={"kind": "version", "lora_id": lora.id, "values": [lora.id, v2.id]},
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["y_labels"] == ["v1", "v2"] and response.json()["x_labels"] == ["1 steps", "3 steps"]
    cell = SweepCell.objects.get(sweep_id=response.json()["id"], x=1, y=1)
    assert cell.job.params["steps"] == 3 and [jl.lora_ref for jl in cell.job.job_loras.all()] == [v2.id]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"x_axis": {"kind": "weight", "lora_id": 1, "values": [0.5, 2.5]}}, "cells.0.1.loras.0.weight"),
        ({"x_axis": {"kind": "steps", "values": [2, 99]}}, "cells.0.1.params.steps"),
        ({"x_axis": {"kind": "steps", "values": [1.5]}}, "x_axis"),
        ({"x_axis": {"kind": "guidance"}}, "x_axis"),
        ({"x_axis": {"kind": "weight", "values": [1.0]}}, "x_axis.lora_id"),
        ({"x_axis": {"kind": "weight", "lora_id": 1, "values": [1.0, 1.0]}}, "x_axis.values"),
        ({"x_axis": {"kind": "bogus", "values": [1]}}, "x_axis"),
        ({"y_axis": {"kind": "weight_low", "lora_id": 999999, "values": [1.0]}}, "y_axis.lora_id"),
        ({"prompt": ""}, "prompt"),
    ],
)
def test_bad_input_is_400_and_nothing_queued(api, workspace, lora, change, field):
    data = body(lora, **change)
    for axis in ("x_axis", "y_axis"):
        if isinstance(data.get(axis), dict) and data[axis].get("lora_id") == 1:
            data[axis]["lora_id"] = lora.id
    response = api.post(url(workspace), data, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert any(key.startswith(field) for key in response.json()["errors"]), response.json()
    assert not Sweep.objects.exists() and not GenerationJob.objects.exists()


def test_a_cell_problem_names_the_cell(api, workspace, lora):
    data = body(lora, x_axis={"kind": "weight", "lora_id": lora.id, "values": [0.5, 2.5]})
    message = api.post(url(workspace), data, format="json").json()["message"]
    assert message.startswith("Cell x = 2.5: ") and "weight must be between 0.0 and 2.0" in message


@override_settings(LORASITE_SWEEP_MAX_CELLS=6)
def test_more_cells_than_the_limit_is_400(api, workspace, lora):
    response = api.post(url(workspace), body(lora, dry_run=True), format="json")
    assert response.status_code == 400
    assert response.json()["message"] == "At most 6 cells per sweep; this one has 7"


def test_viewer_cannot_start_a_sweep_but_sees_it(api, workspace, lora, member_of, client_for):
    viewer = client_for(member_of(Role.VIEWER))
    response = viewer.post(url(workspace), body(lora), format="json")
    assert response.status_code == 403
    assert not Sweep.objects.exists()
    sweep_id = api.post(url(workspace), body(lora), format="json").json()["id"]
    assert viewer.get(url(workspace, f"{sweep_id}/")).status_code == 200
    assert viewer.post(url(workspace, f"{sweep_id}/cancel/")).status_code == 403


def test_cancel_the_whole_sweep(api, workspace, lora):
    sweep_id = api.post(url(workspace), body(lora), format="json").json()["id"]
    first = SweepCell.objects.get(sweep_id=sweep_id, x=0).job
    first.status = JobStatus.SUCCEEDED
    first.save()
    response = api.post(url(workspace, f"{sweep_id}/cancel/"))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    statuses = list(GenerationJob.objects.filter(sweep_cell__sweep_id=sweep_id).values_list("status", flat=True))
    assert statuses.count(JobStatus.CANCELLED) == 6 and statuses.count(JobStatus.SUCCEEDED) == 1
    again = api.post(url(workspace, f"{sweep_id}/cancel/"))
    assert again.status_code == 409


def _png(color) -> bytes:
    out = BytesIO()
    Image.new("RGB", (32, 32), color).save(out, format="PNG")
    return out.getvalue()


def test_contact_sheet_once_every_cell_has_finished(api, workspace, lora):
    data = body(lora, x_axis={"kind": "weight", "lora_id": lora.id, "values": [0.0, 1.0]})
    sweep_id = api.post(url(workspace), data, format="json").json()["id"]
    sheet_url = url(workspace, f"{sweep_id}/contact-sheet/")
    assert api.get(sheet_url).status_code == 409  # still queued
    store = get_object_store()
    for cell in SweepCell.objects.filter(sweep_id=sweep_id).select_related("job"):
        key = f"workspaces/{workspace.id}/outputs/{cell.job.id}/poster.png"  # the demo model makes video
        store.save_stream(key, BytesIO(_png((200, 40 * cell.x, 0))))
        GenerationJob.objects.filter(id=cell.job.id).update(
            status=JobStatus.SUCCEEDED, output_key=key.replace("poster.png", "output.mp4"), poster_key=key
        )
    response = api.get(sheet_url)
    assert response.status_code == 200, response.content
    key = Sweep.objects.get(id=sweep_id).sheet_key
    assert key == f"workspaces/{workspace.id}/outputs/sweeps/{sweep_id}/contact-sheet.png"
    with Image.open(store.open_stream(key)) as sheet:
        assert sheet.format == "PNG" and sheet.width > 2 * 32 and sheet.height > 32
        colors = {color for _, color in sheet.convert("RGB").getcolors(maxcolors=100_000)}
        assert {(200, 0, 0), (200, 40, 0)} <= colors  # both posters, tiled
    assert response.json()["url"]


def test_another_workspace_is_404(api, workspace, lora, outsider, client_for):
    sweep_id = api.post(url(workspace), body(lora), format="json").json()["id"]
    other = MembershipFactory(user=outsider, workspace=WorkspaceFactory(), role=Role.OWNER).workspace
    client = client_for(outsider)
    for suffix in (f"{sweep_id}/", f"{sweep_id}/contact-sheet/"):
        assert client.get(url(workspace, suffix)).status_code == 404
        assert client.get(url(other, suffix)).status_code == 404
    assert client.post(url(other, f"{sweep_id}/cancel/")).status_code == 404
    # A LoRA of another workspace in the stack: 400 naming it, nothing queued.
    response = client.post(url(other), body(lora), format="json")
    assert response.status_code == 400 and Sweep.objects.count() == 1


def test_a_steps_sweep_of_the_base_model(api, workspace):
    data = {"model": WAN, "prompt": "a lighthouse", "x_axis": {"kind": "steps", "values": [1, 2, 4]}}
    response = api.post(url(workspace), data, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["x_title"] == "Steps" and response.json()["total"] == 3


@pytest.mark.usefixtures("broker_down")
def test_broker_down_is_503_naming_the_job_queue_and_leaves_nothing(api, workspace, lora):
    response = api.post(url(workspace), body(lora), format="json")
    assert response.status_code == 503 and response["Content-Type"] == "application/json"
    data = response.json()
    assert (data["code"], data["service"]) == ("service_unavailable", "job queue")
    assert data["message"] == (
        "The job queue is unavailable; no sweep was started and nothing was saved. Try again shortly."
    )
    assert not Sweep.objects.exists() and not SweepCell.objects.exists() and not GenerationJob.objects.exists()
    # Bad input is still a 400 (checked before the broker), and a dry run needs no broker.
    assert api.post(url(workspace), body(lora, prompt=""), format="json").status_code == 400
    assert api.post(url(workspace), body(lora, dry_run=True), format="json").json()["cells"] == 7


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("broker_refuses_sends")
def test_a_broker_failing_after_the_check_keeps_the_whole_sweep_for_beat(api, workspace, lora, monkeypatch):
    response = api.post(url(workspace), body(lora), format="json")
    assert response.status_code == 503, response.content
    data = response.json()
    assert data["service"] == "job queue" and data["message"] == (
        "The job queue is unavailable; your sweep is saved and its jobs will start when it is back."
    )
    sweep = Sweep.objects.get(id=data["sweep_id"])
    jobs = GenerationJob.objects.filter(sweep_cell__sweep=sweep)
    assert jobs.count() == 7 and all(j.status == JobStatus.QUEUED and j.enqueued_at is None for j in jobs)

    # Once the broker takes messages again, beat's re-send queues every cell.
    sent = []
    monkeypatch.setattr(generation_run, "apply_async", lambda args, **options: sent.append(args[0]))
    assert jobs_redispatch(now=timezone.now() + timedelta(minutes=1)) == 7
    assert sorted(sent) == sorted(str(job.id) for job in jobs)
