"""The LoRA library pages through Django's test client: the card grid with search, filters, sort and
pagination, the detail page's inline edits, delete, roles — and 404 for another workspace's URLs."""

import uuid

import pytest

from generation.models import GenerationJob, JobLoRA
from loras.filters import ORDERINGS
from loras.models import LoRA, Status
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory
from workspaces.models import Role

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def make_lora(workspace, user, **fields) -> LoRA:
    """A LoRA row as ingest leaves it (the pages never read the file itself)."""
    key = uuid.uuid4().hex
    values = {
        "name": f"LoRA {key[:6]}",
        "original_filename": "style.safetensors",
        "file": f"workspaces/{workspace.id}/loras/{key}/style.safetensors",
        "file_size": 4 * 1024 * 1024,
        "sha256": key * 2,
        "status": Status.READY,
        "base_model": "wan-14b",
        "rank": 16,
        "alpha": 8.0,
        "key_format": "kohya",
        "dtype": "BF16",
        "tensor_count": 400,
        "created_by": user,
    }
    return LoRA.objects.create(workspace=workspace, **{**values, **fields})


@pytest.fixture
def owner(workspace, member_of):
    return member_of(Role.OWNER)


@pytest.fixture
def signed_in(client, owner):
    client.force_login(owner)
    return client


def library_url(workspace, query: str = "") -> str:
    return f"/w/{workspace.slug}/loras/{query}"


def detail_url(lora, suffix: str = "") -> str:
    return f"/w/{lora.workspace.slug}/loras/{lora.id}/{suffix}"


def names(response) -> list[str]:
    assert response.status_code == 200
    return [lora.name for lora in response.context["page"]]


class TestLibrary:
    def test_cards_show_what_the_issue_asks(self, signed_in, workspace, owner):
        make_lora(
            workspace,
            owner,
            name="Cinematic light",
            version="3",
            expert="high",
            trigger_words=["ohwx", "golden hour"],
            tags=["style"],
            use_count=2,
        )
        response = signed_in.get(library_url(workspace))
        content = response.content.decode()
        for text in (
            "Cinematic light",
            "v3",
            "4 MiB",
            "Wan 2.1/2.2 14B (A14B)",
            "High noise",
            "ohwx",
            "golden hour",
            "#style",
            "Uploaded <time",
            "Used 2 times",
            "Upload LoRAs",
            'data-max-bytes="5368709120"',
        ):
            assert text in content, text

    def test_workspace_root_redirects_to_the_library(self, signed_in, workspace):
        response = signed_in.get(f"/w/{workspace.slug}/")
        assert response.status_code == 302 and response["Location"] == library_url(workspace)

    def test_search_filters_and_sort(self, signed_in, workspace, owner):
        make_lora(
            workspace, owner, name="Anime", tags=["style", "anime"], trigger_words=["cel shading"], base_model="flux"
        )
        make_lora(workspace, owner, name="Portrait", tags=["people"], expert="high", description="Faces in soft light")
        make_lora(workspace, owner, name="Zebra", expert="low", is_active=False, file_size=10)
        make_lora(workspace, owner, name="Broken", status=Status.FAILED, error="Not a LoRA.", sha256="")

        assert names(signed_in.get(library_url(workspace, "?ordering=name"))) == [
            "Anime",
            "Broken",
            "Portrait",
            "Zebra",
        ]
        assert names(signed_in.get(library_url(workspace, "?ordering=-name"))) == [
            "Zebra",
            "Portrait",
            "Broken",
            "Anime",
        ]
        assert names(signed_in.get(library_url(workspace, "?ordering=size")))[0] == "Zebra"
        assert names(signed_in.get(library_url(workspace, "?search=cel+shad"))) == ["Anime"]
        assert names(signed_in.get(library_url(workspace, "?search=soft+light"))) == ["Portrait"]
        assert names(signed_in.get(library_url(workspace, "?base_model=flux"))) == ["Anime"]
        assert names(signed_in.get(library_url(workspace, "?expert=low"))) == ["Zebra"]
        assert names(signed_in.get(library_url(workspace, "?active=false"))) == ["Zebra"]
        assert set(names(signed_in.get(library_url(workspace, "?active=true")))) == {"Anime", "Portrait", "Broken"}
        assert names(signed_in.get(library_url(workspace, "?tag=people"))) == ["Portrait"]
        assert names(signed_in.get(library_url(workspace, "?status=failed"))) == ["Broken"]
        assert names(signed_in.get(library_url(workspace, "?expert=both&tag=anime&ordering=name"))) == ["Anime"]

    def test_the_sort_menu_offers_every_ordering_of_the_filterset(self, signed_in, workspace):
        content = signed_in.get(library_url(workspace)).content.decode()
        menu = content[content.index('<select name="ordering"') :]
        menu = menu[: menu.index("</select>")]
        offered = [option.split('"')[1] for option in menu.split("<option value=")[1:]]
        assert offered == list(ORDERINGS)

    def test_filters_offer_the_workspace_tags(self, signed_in, workspace, owner):
        make_lora(workspace, owner, tags=["Zeta", "alpha"])
        make_lora(WorkspaceFactory(), owner, tags=["secret"])
        content = signed_in.get(library_url(workspace)).content.decode()
        assert content.index('<option value="alpha">') < content.index('<option value="Zeta">')
        assert "secret" not in content

    def test_bad_query_values_are_ignored_and_named_never_a_500(self, signed_in, workspace, owner):
        make_lora(workspace, owner, name="One")
        make_lora(workspace, owner, name="Two")
        response = signed_in.get(
            library_url(workspace, "?expert=middle&ordering=sideways&active=maybe&page=abc&search=" + "x" * 101)
        )
        assert sorted(names(response)) == ["One", "Two"]
        content = response.content.decode()
        assert (
            'id="id_expert_error"' in content
            and "Select a valid choice. middle is not one of the available choices." in content
        )
        assert 'id="id_ordering_error"' in content and 'id="id_active_error"' in content
        assert 'id="id_search_error"' in content and "at most 100 characters" in content

    def test_pagination(self, signed_in, workspace, owner):
        for index in range(30):
            make_lora(workspace, owner, name=f"LoRA {index:02d}")
        first = signed_in.get(library_url(workspace, "?ordering=name"))
        assert names(first) == [f"LoRA {i:02d}" for i in range(24)]
        assert "30 LoRAs · page 1 of 2" in first.content.decode()
        assert 'href="?ordering=name&amp;page=2"' in first.content.decode()
        assert names(signed_in.get(library_url(workspace, "?ordering=name&page=2"))) == [
            f"LoRA {i:02d}" for i in range(24, 30)
        ]
        assert names(signed_in.get(library_url(workspace, "?ordering=name&page=99"))) == [
            f"LoRA {i:02d}" for i in range(24, 30)
        ]

    def test_htmx_filter_request_gets_only_the_results(self, signed_in, workspace, owner):
        make_lora(workspace, owner, name="Anime")
        response = signed_in.get(library_url(workspace, "?search=anime"), HTTP_HX_TARGET="library-results", **HTMX)
        content = response.content.decode()
        assert content.lstrip().startswith('<section id="library-results"') and "<html" not in content
        assert "Anime" in content

    def test_empty_states(self, signed_in, workspace, owner):
        content = signed_in.get(library_url(workspace)).content.decode()
        assert "No LoRAs yet" in content and "Upload your first LoRA" in content
        make_lora(workspace, owner, name="Anime")
        content = signed_in.get(library_url(workspace, "?search=nothing-like-it")).content.decode()
        assert "No LoRAs match" in content and "Clear filters" in content

    def test_deleted_and_other_workspaces_loras_are_not_listed(self, signed_in, workspace, owner):
        make_lora(workspace, owner, name="Mine")
        make_lora(workspace, owner, name="Gone", deleted_at="2025-01-01T00:00:00Z")
        make_lora(WorkspaceFactory(), owner, name="Theirs")
        assert names(signed_in.get(library_url(workspace))) == ["Mine"]

    def test_processing_card_polls_until_done(self, signed_in, workspace, owner):
        lora = make_lora(workspace, owner, status=Status.PROCESSING, sha256="")
        card = signed_in.get(detail_url(lora, "card/"), **HTMX).content.decode()
        assert 'hx-trigger="every 2s"' in card and "Processing" in card
        LoRA.objects.filter(id=lora.id).update(status=Status.READY, sha256="f" * 64)
        card = signed_in.get(detail_url(lora, "card/"), **HTMX).content.decode()
        assert "hx-trigger" not in card and 'data-status="ready"' in card

    def test_duplicate_card_links_the_existing_lora(self, signed_in, workspace, owner):
        existing = make_lora(workspace, owner, name="Original", sha256="d" * 64)
        failed = make_lora(
            workspace,
            owner,
            name="Copy",
            status=Status.FAILED,
            sha256="d" * 64,
            file="",
            error=f"This file is already in the workspace as 'Original' version 1 (id {existing.id}).",
        )
        card = signed_in.get(detail_url(failed, "card/")).content.decode()
        assert "already in the workspace" in card
        assert f'href="{detail_url(existing)}" data-duplicate-link' in card
        assert "data-duplicate-link" not in signed_in.get(detail_url(existing, "card/")).content.decode()

    def test_switcher_lists_only_my_workspaces(self, signed_in, workspace, owner):
        MembershipFactory(user=owner, workspace=WorkspaceFactory(name="Second studio"))
        WorkspaceFactory(name="Not mine")
        content = signed_in.get(library_url(workspace)).content.decode()
        assert "Second studio" in content and "Not mine" not in content and "Create workspace" in content


class TestRoles:
    def test_viewer_sees_no_upload_and_no_edit_controls(self, client, workspace, owner, member_of):
        lora = make_lora(workspace, owner)
        client.force_login(member_of(Role.VIEWER))
        library = client.get(library_url(workspace)).content.decode()
        assert "Upload LoRAs" not in library and "data-uploader" not in library and "upload.js" not in library
        detail = client.get(detail_url(lora)).content.decode()
        assert lora.name in detail and "Download" in detail
        for control in ("Rename", "Delete…", "delete-dialog", "Edit<", 'role="switch"'):
            assert control not in detail, control
        assert client.get(detail_url(lora, "name/edit/")).status_code == 403
        assert client.post(detail_url(lora, "name/"), {"name": "Mine now"}).status_code == 403
        assert client.post(detail_url(lora, "delete/")).status_code == 403
        lora.refresh_from_db()
        assert lora.name != "Mine now" and lora.deleted_at is None

    def test_member_edits_own_loras_only(self, client, workspace, owner, member_of):
        member = member_of(Role.MEMBER)
        own, other = make_lora(workspace, member), make_lora(workspace, owner)
        client.force_login(member)
        assert "Upload LoRAs" in client.get(library_url(workspace)).content.decode()
        assert "Rename" in client.get(detail_url(own)).content.decode()
        assert "Rename" not in client.get(detail_url(other)).content.decode()
        assert (
            client.post(
                detail_url(other, "details/"), {"tags": "x", "preferred_weight": 1, "expert": "both"}
            ).status_code
            == 403
        )

    def test_another_workspaces_urls_are_404(self, client, workspace, owner, member_of):
        lora = make_lora(workspace, owner)
        outsider = UserFactory()
        own_workspace = MembershipFactory(user=outsider, role=Role.OWNER).workspace
        client.force_login(outsider)
        urls = [library_url(workspace), f"/w/{workspace.slug}/"] + [
            detail_url(lora, suffix)
            for suffix in ("", "card/", "name/", "name/edit/", "details/", "details/edit/", "active/", "download/")
        ]
        for url in urls:
            assert client.get(url).status_code == 404, url
        for suffix in ("name/", "details/", "active/", "delete/"):
            assert client.post(detail_url(lora, suffix), {"name": "x", "is_active": "false"}).status_code == 404, suffix
        # The LoRA's id under the outsider's own workspace is no way in either.
        for suffix in ("", "card/", "download/", "delete/"):
            method = client.post if suffix == "delete/" else client.get
            assert method(f"/w/{own_workspace.slug}/loras/{lora.id}/{suffix}").status_code == 404, suffix
        lora.refresh_from_db()
        assert lora.name != "x" and lora.is_active and lora.deleted_at is None
        assert client.get(f"/w/{own_workspace.slug}/loras/").status_code == 200


class TestDetail:
    def test_every_piece_of_metadata(self, signed_in, workspace, owner):
        lora = make_lora(
            workspace,
            owner,
            name="Golden hour",
            trigger_words=["ohwx woman", "smiling"],
            tags=["portrait"],
            description="Warm light",
            training_metadata={
                "steps": 1200,
                "learning_rate": 0.0002,
                "top_tags": [{"tag": "ohwx woman", "count": 20}],
                "dataset_dirs": {"10_ohwx": {"n_repeats": 10, "img_count": 20}},
            },
            header_metadata={"ss_network_dim": "16"},
            original_filename="golden_HIGH.safetensors",
        )
        content = signed_in.get(detail_url(lora)).content.decode()
        for text in (
            lora.sha256,
            "16 / 8",
            "kohya",
            "BF16",
            "Wan 2.1/2.2 14B (A14B)",
            "4 MiB",
            "4,194,304 bytes",
            "golden_HIGH.safetensors",
            'data-copy="ohwx woman"',
            'data-copy="smiling"',
            "Steps",
            "1,200",  # the Configuration tab (tests/test_training_config.py)
            "#portrait",
            "Warm light",
            f'href="{detail_url(lora, "download/")}"',
            "Rename",
            "Delete…",
            'role="switch"',
            "No job has used this LoRA yet",
        ):
            assert text in content, text
        file_tab = signed_in.get(detail_url(lora) + "?tab=file").content.decode()  # the file's own metadata
        for text in ("10_ohwx", "ss_network_dim", "ohwx woman"):
            assert text in file_tab, text

    def test_jobs_that_used_it_link_to_the_job(self, signed_in, workspace, owner):
        lora = make_lora(workspace, owner, use_count=1)
        job = GenerationJob.objects.create(
            workspace=workspace,
            model_key="wan22-a14b-demo",
            model_name="Wan",
            kind="video",
            prompt="A lighthouse at dusk",
            status="succeeded",
        )
        JobLoRA.objects.create(
            job=job,
            lora=lora,
            position=0,
            lora_ref=lora.id,
            name=lora.name,
            version="1",
            sha256=lora.sha256,
            file_key=lora.file.name,
            file_size=1,
            weight=0.75,
            expert="high",
        )
        elsewhere = GenerationJob.objects.create(
            workspace=WorkspaceFactory(), model_key="m", model_name="M", kind="image", prompt="Not here"
        )
        JobLoRA.objects.create(
            job=elsewhere,
            lora=None,
            position=0,
            lora_ref=lora.id,
            name="x",
            version="1",
            sha256="",
            file_key="",
            file_size=1,
            weight=1,
            expert="both",
        )
        content = signed_in.get(detail_url(lora)).content.decode()
        assert f'href="/w/{workspace.slug}/jobs/{job.id}/"' in content and "A lighthouse at dusk" in content
        assert "0.75" in content and "Succeeded" in content and "Not here" not in content

    def test_download_redirects_to_a_signed_url(self, signed_in, workspace, owner):
        lora = make_lora(workspace, owner)
        response = signed_in.get(detail_url(lora, "download/"))
        assert (
            response.status_code == 302
            and "X-Amz-Expires=" in response["Location"]
            and lora.file.name in response["Location"]
        )

    @pytest.mark.parametrize(
        "name, message",
        [("", "A name needs 1 to 100 characters."), ("x" * 101, "A name needs 1 to 100 characters. This one has 101.")],
    )
    def test_rename_errors_are_shown_next_to_the_field(self, signed_in, workspace, owner, name, message):
        lora = make_lora(workspace, owner, name="Keep me")
        for headers in (HTMX, {}):
            response = signed_in.post(detail_url(lora, "name/"), {"name": name}, **headers)
            assert response.status_code == 400
            content = response.content.decode()
            assert f'<p class="error" id="id_name_error" role="alert">{message}</p>' in content
            assert 'aria-describedby="id_name_helptext id_name_error"' in content
            assert ("<html" in content) is not bool(headers)  # htmx gets the part; without JavaScript, the page
        lora.refresh_from_db()
        assert lora.name == "Keep me"

    def test_rename_onto_a_taken_name_and_version(self, signed_in, workspace, owner):
        make_lora(workspace, owner, name="Taken")
        lora = make_lora(workspace, owner, name="Mine")
        response = signed_in.post(detail_url(lora, "name/"), {"name": "Taken"}, **HTMX)
        assert response.status_code == 400 and "This name and version are taken." in response.content.decode()

    def test_rename(self, signed_in, workspace, owner):
        lora = make_lora(workspace, owner, name="Old")
        editor = signed_in.get(detail_url(lora, "name/edit/"), **HTMX).content.decode()
        assert 'value="Old"' in editor and "autofocus" in editor and "keydown[key=='Escape']" in editor
        response = signed_in.post(detail_url(lora, "name/"), {"name": "  New name  "}, **HTMX)
        content = response.content.decode()
        assert response.status_code == 200 and "<h1>New name" in content and "Renamed." in content
        lora.refresh_from_db()
        assert lora.name == "New name"
        response = signed_in.post(detail_url(lora, "name/"), {"name": "Third"})
        assert response.status_code == 302 and response["Location"] == detail_url(lora)
        cancelled = signed_in.get(detail_url(lora, "name/"), **HTMX).content.decode()
        assert "<h1>Third" in cancelled and "<form" not in cancelled

    def test_edit_details(self, signed_in, workspace, owner):
        lora = make_lora(workspace, owner)
        response = signed_in.post(
            detail_url(lora, "details/"),
            {"tags": "style, anime,, Style", "description": "Soft", "preferred_weight": "1.5", "expert": "low"},
            **HTMX,
        )
        content = response.content.decode()
        assert response.status_code == 200 and "Details saved." in content
        assert '<ul id="detail-badges" class="badges detail-badges" aria-label="Summary" hx-swap-oob="true">' in content
        assert '<li class="badge expert-low">Low noise</li>' in content  # the badge at the top follows the edit
        lora.refresh_from_db()
        assert (lora.tags, lora.description, lora.preferred_weight, lora.expert) == (
            ["style", "anime"],
            "Soft",
            1.5,
            "low",
        )
        response = signed_in.post(
            detail_url(lora, "details/"), {"tags": "", "preferred_weight": "3", "expert": "sideways"}, **HTMX
        )
        content = response.content.decode()
        assert response.status_code == 400
        assert 'id="id_preferred_weight_error">Ensure this value is less than or equal to 2.0.' in content
        assert 'id="id_expert_error">Select a valid choice.' in content
        response = signed_in.post(
            detail_url(lora, "details/"), {"tags": "x" * 65, "preferred_weight": "1", "expert": "low"}, **HTMX
        )
        assert response.status_code == 400 and 'id="id_tags_error">' in response.content.decode()

    def test_activate_toggle(self, signed_in, workspace, owner):
        lora = make_lora(workspace, owner)
        response = signed_in.post(detail_url(lora, "active/"), {"is_active": "false"}, **HTMX)
        assert (
            'aria-checked="false"' in response.content.decode()
            and 'name="is_active" value="true"' in response.content.decode()
        )
        lora.refresh_from_db()
        assert not lora.is_active
        signed_in.post(detail_url(lora, "active/"), {"is_active": "true"}, **HTMX)
        lora.refresh_from_db()
        assert lora.is_active

    def test_delete_then_a_second_delete_is_404(self, signed_in, workspace, owner):
        lora = make_lora(workspace, owner, name="Doomed")
        assert signed_in.get(detail_url(lora, "delete/")).status_code == 405
        response = signed_in.post(detail_url(lora, "delete/"), follow=True)
        assert response.redirect_chain == [(library_url(workspace), 302)]
        assert "“Doomed” version 1 was deleted." in response.content.decode() and names(response) == []
        lora.refresh_from_db()
        assert lora.deleted_at is not None
        assert signed_in.post(detail_url(lora, "delete/")).status_code == 404
        assert signed_in.get(detail_url(lora)).status_code == 404
