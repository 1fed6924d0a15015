"""Sweep pages: the form (cost before starting, errors in place, nothing queued on a problem), the grid page and its
htmx partial, cancel, the contact sheet link, the entry points (nav, LoRA page), roles and cross-workspace 404."""

import pytest

from generation.models import GenerationJob, JobStatus, Sweep, SweepCell
from tests.broker_fixtures import broker_down  # noqa: F401  (a fixture)
from tests.factories import LoRAFactory, MembershipFactory, WorkspaceFactory
from workspaces.models import Role

pytestmark = pytest.mark.django_db

WAN = "wan22-a14b-demo"


@pytest.fixture(autouse=True)
def models_built(demo_models):
    return demo_models


@pytest.fixture
def lora(workspace):
    return LoRAFactory(workspace=workspace, name="anime", base_model="wan-demo", version="1")


def form_data(lora, **extra) -> dict:
    return {"model": WAN, "prompt": "a lighthouse", "lora": lora.id, "weights": "0, 0.5, 1", "seed": "3", **extra}


def test_show_cost_then_start(client, workspace, owner, lora):
    client.force_login(owner)
    url = f"/w/{workspace.slug}/sweeps/new/"
    page = client.get(url + f"?lora={lora.id}")
    assert page.status_code == 200 and f'<option value="{lora.id}" selected>' in page.content.decode()
    response = client.post(url, {**form_data(lora, y_kind="steps", y_values="1, 2"), "preview": "1"})
    assert response.status_code == 200
    assert "This sweep queues <strong>6 jobs</strong>" in response.content.decode()
    assert not Sweep.objects.exists() and not GenerationJob.objects.exists()

    response = client.post(url, form_data(lora, y_kind="steps", y_values="1, 2"))
    sweep = Sweep.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/w/{workspace.slug}/sweeps/{sweep.id}/"
    assert SweepCell.objects.filter(sweep=sweep).count() == 6

    page = client.get(response["Location"]).content.decode()
    assert "anime weight × Steps" in page and "0 of 6 cells finished" in page and 'hx-trigger="every 2s"' in page
    assert "Cancel the sweep" in page
    partial = client.get(response["Location"], headers={"HX-Request": "true"}).content.decode()
    assert 'id="sweep-grid"' in partial and "<html" not in partial


def test_version_axis_defaults_to_every_version(client, workspace, owner, lora):
    v2 = LoRAFactory(workspace=workspace, name="anime", base_model="wan-demo", version="2")
    client.force_login(owner)
    response = client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora, y_kind="version"))
    assert response.status_code == 302, response.content.decode()
    sweep = Sweep.objects.get()
    assert sweep.y_axis == {"kind": "version", "lora_id": lora.id, "values": [lora.id, v2.id]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"weights": "0, heavy"}, "List numbers separated by commas"),
        ({"weights": "0, 2.5"}, "weight must be between 0.0 and 2.0"),
        ({"y_kind": "weight"}, "Pick the LoRA whose weight the second axis varies."),
        ({"weights": ", ".join(str(i / 10) for i in range(20)), "y_kind": "steps", "y_values": "1, 2"}, "At most 36"),
    ],
)
def test_problems_shown_in_place_and_nothing_queued(client, workspace, owner, lora, data, message):
    client.force_login(owner)
    response = client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora, **data))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Sweep.objects.exists() and not GenerationJob.objects.exists()


def test_cancel_and_contact_sheet_link(client, workspace, owner, lora):
    client.force_login(owner)
    client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora))
    sweep = Sweep.objects.get()
    response = client.post(f"/w/{workspace.slug}/sweeps/{sweep.id}/cancel/", follow=True)
    assert "Cancelled 3 cells." in response.content.decode()
    page = response.content.decode()
    assert "3 of 3 cells finished · cancelled" in page and 'hx-trigger="every 2s"' not in page
    assert "Contact sheet" not in page  # no cell succeeded
    assert set(GenerationJob.objects.values_list("status", flat=True)) == {JobStatus.CANCELLED}
    response = client.get(f"/w/{workspace.slug}/sweeps/{sweep.id}/contact-sheet/", follow=True)
    assert "No cell of this sweep succeeded" in response.content.decode()


def test_entry_points_and_list(client, workspace, owner, lora):
    client.force_login(owner)
    detail = client.get(f"/w/{workspace.slug}/loras/{lora.id}/").content.decode()
    assert f'href="/w/{workspace.slug}/sweeps/new/?lora={lora.id}">Sweep</a>' in detail
    assert f'href="/w/{workspace.slug}/sweeps/"' in detail  # the nav
    client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora))
    listing = client.get(f"/w/{workspace.slug}/sweeps/").content.decode()
    assert "0 of 3 finished" in listing and "a lighthouse" in listing


def test_viewer_sees_but_cannot_start_or_cancel(client, workspace, owner, lora, member_of):
    client.force_login(owner)
    client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora))
    sweep = Sweep.objects.get()
    client.force_login(member_of(Role.VIEWER))
    assert client.get(f"/w/{workspace.slug}/sweeps/new/").status_code == 403
    assert client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora)).status_code == 403
    page = client.get(f"/w/{workspace.slug}/sweeps/{sweep.id}/").content.decode()
    assert "Cancel the sweep" not in page
    assert ">Sweep</a>" not in client.get(f"/w/{workspace.slug}/loras/{lora.id}/").content.decode()
    client.post(f"/w/{workspace.slug}/sweeps/{sweep.id}/cancel/")
    assert not GenerationJob.objects.filter(status=JobStatus.CANCELLED).exists()


def test_another_workspace_is_404(client, workspace, owner, lora, outsider):
    client.force_login(owner)
    client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora))
    sweep = Sweep.objects.get()
    other = MembershipFactory(user=outsider, workspace=WorkspaceFactory(), role=Role.OWNER).workspace
    client.force_login(outsider)
    for slug in (workspace.slug, other.slug):
        assert client.get(f"/w/{slug}/sweeps/{sweep.id}/").status_code == 404
        assert client.post(f"/w/{slug}/sweeps/{sweep.id}/cancel/").status_code == 404
        assert client.get(f"/w/{slug}/sweeps/{sweep.id}/contact-sheet/").status_code == 404
    # Another workspace's LoRA is not offered: the form refuses it.
    assert client.post(f"/w/{other.slug}/sweeps/new/", form_data(lora)).status_code == 400


def test_admin_lists_sweeps_and_abtests_read_only(client, workspace, owner, lora):
    client.force_login(owner)
    client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora))
    owner.is_staff = owner.is_superuser = True
    owner.save()
    sweep = Sweep.objects.get()
    assert client.get("/admin/generation/sweep/").status_code == 200
    page = client.get(f"/admin/generation/sweep/{sweep.id}/change/")
    assert page.status_code == 200 and "a lighthouse" in page.content.decode()
    assert client.get("/admin/generation/abtest/").status_code == 200
    assert client.get("/admin/generation/sweep/add/").status_code == 403


def test_the_sweep_button_starts_on_a_model_the_lora_fits(client, workspace, owner):
    flux = LoRAFactory(workspace=workspace, name="flux style", base_model="flux-demo")
    client.force_login(owner)
    page = client.get(f"/w/{workspace.slug}/sweeps/new/?lora={flux.id}").content.decode()
    model_select = page.split('name="model"')[1].split("</select>")[0]
    assert 'value="flux-demo" selected' in model_select


@pytest.mark.usefixtures("broker_down")
def test_broker_down_shows_the_job_queue_message_and_starts_nothing(client, workspace, owner, lora):
    client.force_login(owner)
    response = client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora))
    assert response.status_code == 503
    page = response.content.decode()
    assert 'role="alert"' in page and "The job queue is unavailable; no sweep was started" in page
    assert 'name="prompt"' in page and "a lighthouse" in page  # the form is kept, to start again later
    assert not Sweep.objects.exists() and not GenerationJob.objects.exists()


def test_the_grid_rates_every_succeeded_cell_in_one_query(client, workspace, owner, lora):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(owner)

    def grid_queries(weights: str) -> tuple[int, str]:
        client.post(f"/w/{workspace.slug}/sweeps/new/", form_data(lora, weights=weights))
        sweep = Sweep.objects.order_by("-id").first()
        GenerationJob.objects.filter(sweep_cell__sweep=sweep).update(status=JobStatus.SUCCEEDED)
        with CaptureQueriesContext(connection) as queries:
            page = client.get(f"/w/{workspace.slug}/sweeps/{sweep.id}/").content.decode()
        return len(queries), page

    few, page = grid_queries("0, 1")
    many, page = grid_queries("0, 0.25, 0.5, 0.75, 1, 1.25")
    assert page.count('aria-label="Your rating"') == 6
    assert many == few
