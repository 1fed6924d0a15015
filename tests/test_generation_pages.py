"""The Generate, jobs and job pages through the Django test client: model switch, LoRA pickers,
job creation and errors next to their fields, viewers, cancel/retry, and 404 across workspaces."""

import re

import pytest
from django.utils import timezone

from generation.models import GenerationJob, JobLoRA, JobStatus
from loras import services as lora_services
from loras.models import LoRA
from tests.factories import MembershipFactory, WorkspaceFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Membership, Role

pytestmark = pytest.mark.django_db

WAN = "wan22-a14b-demo"


@pytest.fixture(autouse=True)
def models_built(demo_models):
    return demo_models


@pytest.fixture
def owner(workspace) -> Membership:
    return MembershipFactory(workspace=workspace, role=Role.OWNER)


@pytest.fixture
def web(client, owner):
    client.force_login(owner.user)
    return client


@pytest.fixture
def make_lora(owner, tmp_path):
    seeds = iter(range(1000))

    def make(name: str, *, family: str = "wan-demo", membership: Membership | None = None, **fields) -> LoRA:
        seed = next(seeds)
        path = write_lora(tmp_path / f"{name}-{seed}.safetensors", family=family, blocks=2, std=0.3, seed=seed)
        lora = ingest_ready(actor=membership or owner, path=path, options=lora_services.LoRAOptions(name=name))
        if fields:
            LoRA.objects.filter(id=lora.id).update(**fields)
            lora.refresh_from_db()
        return lora

    return make


def url(workspace, name: str = "generate", job=None) -> str:
    path = f"/w/{workspace.slug}/{name}/"
    return path if job is None else f"/w/{workspace.slug}/jobs/{job.id}/{'' if name == 'job' else name + '/'}"


def form_data(**overrides) -> dict:
    data = {
        "model": WAN,
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "",
        "resolution": "32x32",
        "num_frames": "5",
        "fps": "8",
        "steps": "4",
        "guidance": "4.0",
        "guidance_2": "3.0",
        "seed": "7",
    }
    return {**data, **overrides}


def option(html: str, lora: LoRA) -> str:
    """The picker button of one LoRA."""
    match = re.search(rf'<button type="button" class="lora-option" data-lora-id="{lora.id}".*?</button>', html, re.S)
    assert match, f"no picker option for {lora.name}"
    return match.group(0)


def test_pages_render_for_a_member(web, workspace, make_lora):
    make_lora("style")
    page = web.get(url(workspace)).content.decode()
    assert "Wan 2.2 A14B (demo)" in page and "FLUX (demo)" in page and "Wan single expert (demo)" in page
    assert "Weights not installed" in page  # the real models' weights are not in the test environment
    assert 'name="prompt"' in page and "High-noise" in page and "Low-noise" in page
    assert 'type="submit"' in page and "0</span> of 5 LoRAs" in page
    assert web.get(url(workspace, "jobs")).status_code == 200


def test_model_switch_rerenders_the_pickers(web, workspace, make_lora):
    lora = make_lora("style")
    two = web.get(url(workspace), {"model": WAN}, HTTP_HX_REQUEST="true")
    assert two.status_code == 200 and "<html" not in two.content.decode()
    assert two.content.decode().count('class="lora-section"') == 2
    assert 'data-expert="high"' in two.content.decode() and 'data-expert="low"' in two.content.decode()
    assert two["Vary"] and "HX-Request" in two["Vary"]

    # The prompt and the picked LoRA stay; the single-expert model has one list and no guidance 2.
    one = web.get(
        url(workspace),
        {"model": "wan-ti2v-demo", "prompt": "kept", "lora_id": lora.id, "lora_weight": "0.7", "lora_expert": "low"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert one.count('class="lora-section"') == 1 and 'data-expert=""' in one
    assert "High-noise" not in one and 'name="guidance_2"' not in one
    assert "kept</textarea>" in one and f'name="lora_id" value="{lora.id}"' in one and 'value="0.70"' in one

    image = web.get(url(workspace), {"model": "flux-demo"}, HTTP_HX_REQUEST="true").content.decode()
    assert 'name="num_frames"' not in image and '<option value="64x64">64 × 64</option>' in image


def test_incompatible_loras_are_disabled_with_the_model_they_need(web, workspace, make_lora):
    wan, flux = make_lora("wan style"), make_lora("portrait", family="flux-demo")
    on_wan = web.get(url(workspace), {"model": WAN}).content.decode()
    assert " disabled" not in option(on_wan, wan)
    assert " disabled" in option(on_wan, flux) and "Requires FLUX (demo)" in option(on_wan, flux)
    assert on_wan.index(f'data-lora-id="{wan.id}"') < on_wan.index(f'data-lora-id="{flux.id}"')  # usable ones first

    on_flux = web.get(url(workspace), {"model": "flux-demo"}).content.decode()
    assert " disabled" in option(on_flux, wan) and "Requires Wan 2.2 A14B (demo)" in option(on_flux, wan)


def test_no_fitting_lora_means_the_base_model(web, workspace, make_lora):
    make_lora("portrait", family="flux-demo")
    page = web.get(url(workspace), {"model": WAN}).content.decode()
    assert "None (base model)" in page and "the job runs on the base model alone" in page
    assert re.search(r'data-add-lora data-expert="high"[^>]*disabled', page)


def test_recently_used_loras_come_first(web, workspace, make_lora):
    old, recent, never = make_lora("old"), make_lora("recent"), make_lora("never")
    LoRA.objects.filter(id=old.id).update(last_used_at=timezone.now() - timezone.timedelta(days=3))
    LoRA.objects.filter(id=recent.id).update(last_used_at=timezone.now())
    page = web.get(url(workspace)).content.decode()
    positions = [page.index(f'class="lora-option" data-lora-id="{lora.id}"') for lora in (recent, old, never)]
    assert positions == sorted(positions)


def test_posting_creates_the_job_with_experts_and_weights(web, workspace, make_lora):
    high, low = make_lora("style"), make_lora("detail")
    data = form_data(lora_id=[high.id, low.id], lora_weight=["0.8", "0.55"], lora_expert=["high", "low"])
    response = web.post(url(workspace), data)
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/w/{workspace.slug}/jobs/{job.id}/"
    assert job.model_key == WAN and job.prompt == "a lighthouse at dusk"
    assert job.params == {
        "width": 32,
        "height": 32,
        "steps": 4,
        "guidance": 4.0,
        "guidance_2": 3.0,
        "num_frames": 5,
        "fps": 8,
        "seed": 7,
    }
    rows = list(JobLoRA.objects.filter(job=job).values_list("lora_id", "weight", "expert"))
    assert rows == [(high.id, 0.8, "high"), (low.id, 0.55, "low")]


def test_single_expert_job_leaves_the_expert_to_the_service(web, workspace, make_lora):
    lora = make_lora("style")
    data = form_data(model="wan-ti2v-demo", lora_id=[lora.id], lora_weight=["1.25"], lora_expert=[""])
    del data["guidance_2"]
    assert web.post(url(workspace), data).status_code == 302
    assert list(JobLoRA.objects.values_list("weight", "expert")) == [(1.25, "high")]


def test_errors_are_shown_next_to_their_fields(web, workspace, make_lora):
    good, flux = make_lora("style"), make_lora("portrait", family="flux-demo")
    data = form_data(steps="99", lora_id=[good.id, flux.id], lora_weight=["0.8", "1"], lora_expert=["high", "low"])
    response = web.post(url(workspace), data)
    assert response.status_code == 400 and not GenerationJob.objects.exists()
    page = response.content.decode()
    steps_field = re.search(r'<div class="field has-error">\s*<label for="id_steps">.*?</div>', page, re.S).group(0)
    assert "steps must be between 1 and 10" in steps_field
    flux_row = re.search(rf'<li class="lora-row has-error" data-lora-id="{flux.id}">.*?</li>', page, re.S).group(0)
    assert "is a FLUX demo (tiny) LoRA" in flux_row
    good_row = re.search(rf'<li class="lora-row" data-lora-id="{good.id}">.*?</li>', page, re.S).group(0)
    assert 'value="0.80"' in good_row and "error" not in good_row
    assert "\na lighthouse at dusk</textarea>" in page  # the rest of the input is kept

    too_many = [make_lora(f"extra {n}").id for n in range(5)] + [good.id]
    page = web.post(
        url(workspace), form_data(lora_id=too_many, lora_weight=["1"] * 6, lora_expert=["high"] * 6)
    ).content.decode()
    assert "At most 5 LoRAs per job; 6 were given" in page

    page = web.post(url(workspace), form_data(prompt="", resolution="999x999")).content.decode()
    assert re.search(r'<label for="id_prompt">.*?This field is required', page, re.S)
    assert re.search(r'<label for="id_resolution">.*?Select a valid choice', page, re.S)


def test_viewer_cannot_run_jobs(client, workspace):
    viewer = MembershipFactory(workspace=workspace, role=Role.VIEWER)
    client.force_login(viewer.user)
    page = client.get(url(workspace)).content.decode()
    assert "you can look at the models and LoRAs here, but running jobs needs the member role" in page
    assert 'type="submit">Generate' not in page and "data-add-lora" not in page
    response = client.post(url(workspace), form_data())
    assert response.status_code == 403 and "can run generations; your role is viewer" in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_another_workspaces_pages_are_404(web, workspace, make_lora):
    other = WorkspaceFactory()
    stranger = MembershipFactory(workspace=other, role=Role.OWNER)
    web.post(url(workspace), form_data())
    mine = GenerationJob.objects.get()
    for path in (url(other), url(other, "jobs"), f"/w/{other.slug}/jobs/{mine.id}/"):
        assert web.get(path).status_code == 404, path
    assert web.post(url(other), form_data()).status_code == 404
    # My job, at its own URL and under the other workspace's slug, to the other workspace's owner.
    web.force_login(stranger.user)
    for slug in (workspace.slug, other.slug):
        assert web.get(f"/w/{slug}/jobs/{mine.id}/").status_code == 404
        for action in ("cancel", "retry"):
            assert web.post(f"/w/{slug}/jobs/{mine.id}/{action}/").status_code == 404
    assert GenerationJob.objects.get().status == JobStatus.QUEUED


def test_jobs_list_shows_status_loras_and_deleted_marks(web, workspace, make_lora):
    lora = make_lora("doomed")
    web.post(url(workspace), form_data(lora_id=[lora.id], lora_weight=["0.8"], lora_expert=["high"]))
    LoRA.objects.filter(id=lora.id).update(deleted_at=timezone.now())
    page = web.get(url(workspace, "jobs")).content.decode()
    assert "a lighthouse at dusk" in page and "Queued" in page and "Deleted LoRA" in page and "doomed" in page
    assert 'hx-trigger="every 2s"' in page and "<progress" in page and "1 queued" in page

    # The htmx poll answers the partial; once every job has finished it stops polling.
    GenerationJob.objects.update(status=JobStatus.FAILED, error="out of memory")
    partial = web.get(url(workspace, "jobs"), HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial and "hx-trigger" not in partial and "out of memory" in partial


def test_job_page_shows_inputs_timings_and_player(web, workspace, make_lora):
    lora = make_lora("style")
    web.post(url(workspace), form_data(lora_id=[lora.id], lora_weight=["0.8"], lora_expert=["low"]))
    job = GenerationJob.objects.get()
    page = web.get(url(workspace, "job", job)).content.decode()
    assert "a lighthouse at dusk" in page and "style" in page and "0.80" in page and "Low noise" in page
    assert 'hx-trigger="every 2s"' in page and "<video" not in page
    key = f"workspaces/{workspace.id}/outputs/{job.id}/output.mp4"
    GenerationJob.objects.filter(id=job.id).update(
        status=JobStatus.SUCCEEDED,
        progress=100,
        output_key=key,
        poster_key=key.replace("output.mp4", "poster.png"),
        timings={"queue_wait": 0.5, "model_load": 1.25, "inference": 2.0, "encode": 0.1},
    )
    page = web.get(url(workspace, "job", job), HTTP_HX_REQUEST="true").content.decode()
    assert re.search(r'<video controls[^>]*src="http[^"]*output\.mp4[^"]*"[^>]*poster="http[^"]*poster\.png', page)
    assert "Download MP4" in page and "attachment" in page  # the download link asks for a file, not a player
    assert "Model load" in page and "1.25 s" in page and "hx-trigger" not in page


def test_cancel_and_retry_buttons(web, workspace, make_lora):
    web.post(url(workspace), form_data())
    job = GenerationJob.objects.get()
    jobs_page = url(workspace, "jobs")
    assert f'id="cancel-{job.id}"' in web.get(jobs_page).content.decode()

    response = web.post(url(workspace, "cancel", job), {"next": jobs_page}, follow=True)
    assert response.redirect_chain[-1][0] == jobs_page and "Job cancelled." in response.content.decode()
    assert GenerationJob.objects.get(id=job.id).status == JobStatus.CANCELLED
    again = web.post(url(workspace, "cancel", job), {"next": "https://evil.example/"}, follow=True)
    assert again.redirect_chain[-1][0] == url(workspace, "job", job)  # only same-site paths
    assert "The job has already cancelled." in again.content.decode()

    response = web.post(url(workspace, "retry", job))
    retry = GenerationJob.objects.exclude(id=job.id).get()
    assert response["Location"] == url(workspace, "job", retry) and retry.retry_of_id == job.id


def test_retry_with_a_deleted_lora_says_why(web, workspace, make_lora):
    lora = make_lora("gone")
    web.post(url(workspace), form_data(lora_id=[lora.id], lora_weight=["1"], lora_expert=["high"]))
    job = GenerationJob.objects.get()
    GenerationJob.objects.update(status=JobStatus.FAILED)
    LoRA.objects.filter(id=lora.id).update(deleted_at=timezone.now())
    page = web.post(url(workspace, "retry", job), follow=True).content.decode()
    assert "Could not retry: LoRA &#x27;gone&#x27; has been deleted" in page
    assert GenerationJob.objects.count() == 1


def test_members_cannot_cancel_someone_elses_job(client, web, workspace):
    web.post(url(workspace), form_data())
    job = GenerationJob.objects.get()
    member = MembershipFactory(workspace=workspace, role=Role.MEMBER)
    client.force_login(member.user)
    page = client.post(url(workspace, "cancel", job), follow=True).content.decode()
    assert "cancel someone else" in page and GenerationJob.objects.get().status == JobStatus.QUEUED


def test_sign_in_required(client, workspace):
    assert client.get(url(workspace))["Location"].startswith("/accounts/login/")


def row_html(page: str, lora: LoRA, expert: str) -> str:
    rows = re.findall(rf'<li class="lora-row[^"]*" data-lora-id="{lora.id}">.*?</li>', page, re.S)
    matching = [row for row in rows if f'name="lora_expert" value="{expert}"' in row]
    assert matching, f"no {expert} row for {lora.name}"
    return matching[0]


class TestExperts:
    def test_a_lora_in_both_sections_is_one_both_entry_with_a_weight_each(self, web, workspace, make_lora):
        lora, other = make_lora("pair"), make_lora("detail")
        data = form_data(
            lora_id=[lora.id, other.id, lora.id], lora_weight=["1.0", "0.7", "0.5"], lora_expert=["high", "high", "low"]
        )
        assert web.post(url(workspace), data).status_code == 302
        rows = list(JobLoRA.objects.values_list("lora_id", "expert", "weight", "weight_low"))
        assert rows == [(lora.id, "both", 1.0, 0.5), (other.id, "high", 0.7, None)]
        page = web.get(url(workspace, "job", GenerationJob.objects.get())).content.decode()
        assert "high 1.00 · low 0.50" in page and "Both experts" in page

    def test_the_low_noise_row_may_come_first(self, web, workspace, make_lora):
        lora = make_lora("pair")
        data = form_data(lora_id=[lora.id, lora.id], lora_weight=["0.3", "1.1"], lora_expert=["low", "high"])
        assert web.post(url(workspace), data).status_code == 302
        assert list(JobLoRA.objects.values_list("expert", "weight", "weight_low")) == [("both", 1.1, 0.3)]

    def test_equal_sliders_are_one_weight(self, web, workspace, make_lora):
        lora = make_lora("pair")
        data = form_data(lora_id=[lora.id, lora.id], lora_weight=["0.8", "0.8"], lora_expert=["high", "low"])
        assert web.post(url(workspace), data).status_code == 302
        assert list(JobLoRA.objects.values_list("expert", "weight", "weight_low")) == [("both", 0.8, None)]

    def test_the_same_lora_twice_in_one_section_is_refused(self, web, workspace, make_lora):
        lora = make_lora("twice")
        data = form_data(lora_id=[lora.id, lora.id], lora_weight=["1", "1"], lora_expert=["high", "high"])
        page = web.post(url(workspace), data).content.decode()
        assert "is listed twice" in page and not GenerationJob.objects.exists()

    def test_a_both_lora_from_a_single_expert_model_goes_into_both_sections(self, web, workspace, make_lora):
        lora = make_lora("everywhere", expert="both")
        low = make_lora("fine detail", expert="low")
        page = web.get(
            url(workspace),
            {"model": WAN, "lora_id": [lora.id, low.id], "lora_weight": ["0.6", "1"], "lora_expert": ["", ""]},
            HTTP_HX_REQUEST="true",
        ).content.decode()
        assert 'value="0.60"' in row_html(page, lora, "high") and 'value="0.60"' in row_html(page, lora, "low")
        assert f'name="lora_id" value="{low.id}"' not in page.split('data-expert="low"')[0]  # only in Low-noise
        assert "2</span> of 5 LoRAs" in page  # the one in both sections counts once

    def test_a_lora_in_the_other_experts_section_is_warned_about(self, web, workspace, make_lora):
        low, high, both = make_lora("detail", expert="low"), make_lora("motion", expert="high"), make_lora("any")
        data = form_data(
            steps="99", lora_id=[low.id, high.id, both.id], lora_weight=["1"] * 3, lora_expert=["high", "low", "low"]
        )
        page = web.post(url(workspace), data).content.decode()
        warning = "'detail' is marked as a low-noise LoRA; in High-noise it may not work as intended."
        assert warning.replace("'", "&#x27;") in row_html(page, low, "high")
        assert "is marked as a high-noise LoRA; in Low-noise" in row_html(page, high, "low")
        assert 'class="lora-warning" role="note" data-fill="warning" hidden' in row_html(page, both, "low")
        assert 'class="lora-row has-error"' not in page  # a warning, not an error
        # The picker carries the same words for rows added in the browser.
        assert 'data-warning-high="&#x27;detail&#x27; is marked as a low-noise LoRA' in option(page, low)
        assert 'data-warning-low=""' in option(page, low) and 'data-hint="low"' in option(page, low)

    def test_both_experts_button_in_the_picker_of_two_expert_models_only(self, web, workspace, make_lora):
        make_lora("style")
        assert "data-add-both" in web.get(url(workspace), {"model": WAN}).content.decode()
        assert "data-add-both" not in web.get(url(workspace), {"model": "wan-ti2v-demo"}).content.decode()

    def test_weight_low_problems_land_on_the_low_noise_row(self, web, workspace, make_lora):
        lora = make_lora("pair")
        data = form_data(lora_id=[lora.id, lora.id], lora_weight=["1", "2.5"], lora_expert=["high", "low"])
        page = web.post(url(workspace), data).content.decode()
        assert "weight_low must be between 0.0 and 2.0, not 2.5" in row_html(page, lora, "low")
        assert "error" not in row_html(page, lora, "high").replace("lora-row has-error", "")


def test_trigger_words_button_on_a_picked_lora(web, workspace, make_lora):
    lora = make_lora("ohwx style", trigger_words=["ohwx", "pastel look"])
    plain = make_lora("plain")
    page = web.get(
        url(workspace),
        {"model": WAN, "lora_id": [lora.id, plain.id], "lora_weight": ["1", "1"], "lora_expert": ["high"] * 2},
    ).content.decode()
    row = row_html(page, lora, "high")
    assert "ohwx, pastel look" in row and 'data-triggers="[&quot;ohwx&quot;, &quot;pastel look&quot;]"' in row
    assert '<div class="lora-triggers" hidden>' in row_html(page, plain, "high")
    assert 'data-triggers="[&quot;ohwx&quot;, &quot;pastel look&quot;]"' in option(page, lora)


def test_every_problem_of_a_lora_is_shown_as_the_api_reports_it(web, client_for, owner, workspace, make_lora):
    """A FLUX LoRA at weight 2.5 on a Wan model: the page and the API give the same two messages."""
    flux = make_lora("portrait", family="flux-demo")
    page = web.post(
        url(workspace), form_data(lora_id=[flux.id], lora_weight=["2.5"], lora_expert=["low"])
    ).content.decode()
    api = client_for(owner.user)
    body = api.post(
        f"/api/v1/workspaces/{workspace.slug}/generations/",
        {"model": WAN, "prompt": "a", "loras": [{"lora_id": flux.id, "weight": 2.5, "expert": "low"}]},
        format="json",
    ).json()
    messages = [message for key in ("loras.0.lora_id", "loras.0.weight") for message in body["errors"][key]]
    assert len(messages) == 2 and "weight must be between 0.0 and 2.0, not 2.5" in messages
    row = row_html(page, flux, "low")
    for message in messages:
        assert message.replace("'", "&#x27;") in row


def test_no_stale_flash_on_the_job_page(web, workspace):
    response = web.post(url(workspace), form_data(), follow=True)
    page = response.content.decode()
    assert response.redirect_chain and 'class="messages"' not in page
    assert "Waiting for a GPU worker" in page  # "queued" is the job's live state, not a message
    job = GenerationJob.objects.get()
    GenerationJob.objects.filter(id=job.id).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())
    later = web.get(url(workspace, "job", job)).content.decode()
    assert 'class="messages"' not in later and "queued" not in later.lower().replace("status-queued", "")


def test_cancelling_a_running_job_says_so_in_its_live_status(web, workspace):
    web.post(url(workspace), form_data())
    job = GenerationJob.objects.get()
    GenerationJob.objects.filter(id=job.id).update(status=JobStatus.RUNNING)
    page = web.post(url(workspace, "cancel", job), follow=True).content.decode()
    assert 'class="messages"' not in page and "cancelling after the current step" in page


def test_recommended_settings_are_offered_for_the_models_inputs(web, workspace, make_lora):
    fast = make_lora("lightx2v 4steps", is_distill=True, recommended_settings={"steps": 4, "guidance": 1.0, "shift": 5})
    other = make_lora("for flux", recommended_settings={"steps": 8, "model": "flux-demo"})
    data = {"model": WAN, "lora_id": [fast.id, other.id], "lora_weight": ["1", "1"], "lora_expert": ["high", "low"]}
    page = web.get(url(workspace), data).content.decode()
    row = row_html(page, fast, "high")
    assert 'Use recommended settings (<span data-fill="recommended">4 steps, guidance 1</span>)' in row
    assert 'data-recommended="{&quot;steps&quot;: 4, &quot;guidance&quot;: 1.0}"' in row  # shift is no job input
    assert '<div class="lora-recommended" data-recommended="{}" hidden>' in row_html(page, other, "low")
    assert 'data-recommended-label="4 steps, guidance 1"' in option(page, fast)
    assert 'data-recommended-label=""' in option(page, other)
