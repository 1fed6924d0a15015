"""The dashboard defects a new user hit (issue 10), each in a real Chromium against a live server: validation errors
inline with DEBUG on, the API docs offline, tables that fit a phone, confirmations before removing or leaving,
workspaces told apart and renamed or deleted, the admin's generation jobs, and the app's own 404 with DEBUG on."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from generation.models import GenerationJob, JobLoRA
from tests.browser.conftest import DESKTOP_VIEWPORT, PHONE_VIEWPORT, SCREENSHOTS
from tests.factories import PASSWORD, MembershipFactory, UserFactory
from tests.test_library_pages import make_lora
from workspaces.models import Membership, Role, StoragePurge, Workspace

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_PROMPT = (
    "A lighthouse on a basalt cliff at dusk, waves breaking below, volumetric fog rolling in from the sea, "
    "cinematic lighting, 35mm film grain"
)


@pytest.fixture
def owner():
    return MembershipFactory(role=Role.OWNER, workspace__name="Wan studio", workspace__slug="wan-studio")


def used_in_a_job(lora, *, prompt: str = LONG_PROMPT) -> GenerationJob:
    job = GenerationJob.objects.create(
        workspace=lora.workspace,
        created_by=lora.created_by,
        model_key="wan22-a14b-demo",
        model_name="Wan 2.2 A14B (demo)",
        kind="video",
        prompt=prompt,
        negative_prompt="blurry, low quality, watermark, text, deformed hands, oversaturated",
        params={"width": 832, "height": 480, "num_frames": 81, "fps": 16, "steps": 40, "guidance": 4.0, "seed": 42},
        status="succeeded",
        timings={"queue_wait": 0.41, "model_load": 12.3, "adapter_load": 0.8, "inference": 95.2, "encode": 1.4},
    )
    JobLoRA.objects.create(
        job=job,
        lora=lora,
        position=0,
        lora_ref=lora.id,
        name=lora.name,
        version=lora.version,
        sha256=lora.sha256,
        file_key=lora.file.name,
        file_size=lora.file_size,
        weight=0.75,
        expert="high",
    )
    return job


def fits_a_phone(page) -> None:
    """No page-level horizontal scroll at 390 px: what does not fit scrolls inside its own container."""
    page.set_viewport_size(PHONE_VIEWPORT)
    width = page.evaluate("document.documentElement.scrollWidth")
    # What sticks out, to say in the failure what to fix.
    wide = page.evaluate(
        """() => [...document.querySelectorAll("body *")]
            .filter((e) => e.getBoundingClientRect().right > 391 && !e.closest(".table-wrap"))
            .slice(0, 8).map((e) => `${e.tagName}.${e.className}: ${Math.round(e.getBoundingClientRect().right)}`)"""
    )
    page.set_viewport_size(DESKTOP_VIEWPORT)
    assert width <= 390, f"{page.url} is {width} px wide at 390 px: {wide}"


# --- 1. validation errors stay inline with DEBUG on ------------------------------------------------------------


def test_inline_edit_errors_stay_in_place_with_debug_on(page, sign_in, screenshot, settings, owner):
    settings.DEBUG = True  # what `make run` runs with: django-htmx adds its debug error script
    lora = make_lora(owner.workspace, owner.user, name="Golden hour")
    sign_in(owner.user)
    page.goto(f"/w/{owner.workspace.slug}/loras/{lora.id}/")
    assert page.locator("script[src*='django-htmx.js']").count() == 1

    page.get_by_role("link", name="Rename Golden hour").click()
    name = page.get_by_label("Name")
    for value in ("", "x" * 101):
        name.evaluate("(input, value) => { input.removeAttribute('maxlength'); input.value = value; }", value)
        name.press("Enter")
        expect(page.locator("#lora-name .error")).to_contain_text("1 to 100 characters")
        # The page is still the whole page, not the bare fragment.
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
        expect(page.get_by_role("heading", name="Trigger words")).to_be_visible()
    screenshot("defects-rename-error-debug")
    page.keyboard.press("Escape")
    expect(page.get_by_role("heading", name="Golden hour")).to_be_visible()

    page.get_by_role("link", name="Edit details").click()
    weight = page.get_by_label("Preferred weight")
    weight.fill("3")
    page.get_by_role("button", name="Save details").click()
    expect(page.locator("#lora-details .error")).to_contain_text("2")
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    screenshot("defects-details-error-debug")
    lora.refresh_from_db()
    assert lora.name == "Golden hour" and lora.preferred_weight == 1.0


# --- 7. the app's own 404 page with DEBUG on --------------------------------------------------------------------


def test_missing_and_foreign_loras_get_the_app_404_with_debug_on(page, sign_in, screenshot, settings, owner):
    settings.DEBUG = True
    elsewhere = make_lora(MembershipFactory(role=Role.OWNER).workspace, owner.user, name="Not yours")
    sign_in(owner.user)
    for url in (
        f"/w/{owner.workspace.slug}/loras/999999/",
        f"/w/{owner.workspace.slug}/loras/{elsewhere.id}/",
        f"/w/{elsewhere.workspace.slug}/loras/{elsewhere.id}/",
        "/no/such/page/",
    ):
        response = page.goto(url)
        assert response.status == 404, url
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        content = page.content()
        assert "URLconf" not in content and "Using the URLconf" not in content and "Not yours" not in content
    screenshot("defects-404-debug")
    api = page.request.get(f"/api/v1/workspaces/{owner.workspace.slug}/loras/999999/")
    assert api.status == 404 and api.json()["code"] == "not_found"
    api = page.request.get("/api/v1/no-such-endpoint/")
    assert api.status == 404 and api.json()["code"] == "not_found"


# --- 3. tables fit a phone --------------------------------------------------------------------------------------


def test_tables_fit_a_phone(page, sign_in, screenshot, owner):
    lora = make_lora(
        owner.workspace,
        owner.user,
        name="golden_hour_cinematic_lighting_high_noise_v2_final",
        use_count=1,
        last_used_at=timezone.now(),
    )
    job = used_in_a_job(lora)
    for index in range(3):
        user = UserFactory(username=f"colleague_with_a_long_name_{index}", email=f"colleague.{index}@studio.example")
        Membership.objects.create(workspace=owner.workspace, user=user, role=Role.MEMBER)
    sign_in(owner.user)
    for name, url in [
        ("defects-members-table", f"/w/{owner.workspace.slug}/members/"),
        ("defects-lora-jobs-table", f"/w/{owner.workspace.slug}/loras/{lora.id}/"),
        ("defects-job-tables", f"/w/{owner.workspace.slug}/jobs/{job.id}/"),
    ]:
        page.goto(url)
        fits_a_phone(page)
        screenshot(name)
        # The tables alone at phone width, where the whole-page screenshot shrinks them out of sight.
        page.set_viewport_size(PHONE_VIEWPORT)
        for index, table in enumerate(page.locator("main .table").all()):
            table.screenshot(path=str(SCREENSHOTS / f"{name}-{index}-phone-table.png"))
        page.set_viewport_size(DESKTOP_VIEWPORT)


# --- 4. removing a member and leaving ask first ----------------------------------------------------------------


def test_remove_and_leave_ask_for_confirmation(page, sign_in, screenshot, owner):
    workspace = owner.workspace
    colleague = MembershipFactory(workspace=workspace, user__username="mira", role=Role.MEMBER)
    other_owner = MembershipFactory(workspace=workspace, user__username="jonas", role=Role.OWNER)
    sign_in(owner.user)
    page.goto(f"/w/{workspace.slug}/members/")

    page.get_by_role("button", name="Remove… mira").click()
    dialog = page.get_by_role("dialog", name="Remove mira?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("loses access to “Wan studio” at once")
    screenshot("defects-remove-member-dialog")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert Membership.objects.filter(id=colleague.id).exists()  # cancelling removes no one

    page.get_by_role("button", name="Remove… mira").click()
    dialog.get_by_role("button", name="Remove mira").click()
    expect(page.get_by_role("status")).to_contain_text("mira removed.")
    assert not Membership.objects.filter(id=colleague.id).exists()

    page.get_by_role("button", name="Leave…").click()
    dialog = page.get_by_role("dialog", name="Leave “Wan studio”?")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert Membership.objects.filter(id=owner.id).exists()
    page.get_by_role("button", name="Leave…").click()
    dialog.get_by_role("button", name="Leave workspace").click()
    page.wait_for_url("**/")
    assert not Membership.objects.filter(id=owner.id).exists()
    assert Membership.objects.filter(id=other_owner.id).exists()


def test_remove_asks_for_confirmation_without_javascript(browser, live_server, screenshot, owner):
    colleague = MembershipFactory(workspace=owner.workspace, user__username="mira", role=Role.MEMBER)
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False, viewport=DESKTOP_VIEWPORT)
    page = context.new_page()
    try:
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(owner.user.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.goto(f"/w/{owner.workspace.slug}/members/")
        page.get_by_role("button", name="Remove… mira").click()
        dialog = page.get_by_role("dialog", name="Remove mira?")
        expect(dialog).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / "defects-remove-member-no-js.png"), full_page=True)
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        assert Membership.objects.filter(id=colleague.id).exists()
        page.get_by_role("button", name="Remove… mira").click()
        page.get_by_role("dialog", name="Remove mira?").get_by_role("button", name="Remove mira").click()
        expect(page.get_by_role("status")).to_contain_text("mira removed.")
        assert not Membership.objects.filter(id=colleague.id).exists()
    finally:
        context.close()


# --- 5. workspaces told apart, renamed and deleted -----------------------------------------------------------


def test_switcher_shows_slugs_and_owners_rename_and_delete(page, sign_in, screenshot, owner, settings):
    workspace = owner.workspace
    twin = MembershipFactory(user=owner.user, role=Role.OWNER, workspace__name="Wan studio", workspace__slug="wan-b")
    sign_in(owner.user)
    page.goto("/")
    # Each workspace on the home page leads to its settings, named by slug too.
    expect(page.get_by_role("link", name="Settings of /w/wan-b/")).to_be_visible()
    screenshot("defects-home-settings-links")
    page.get_by_role("link", name="Settings of /w/wan-studio/").click()
    expect(page.get_by_role("heading", name="Workspace settings")).to_be_visible()
    page.goto(f"/w/{workspace.slug}/members/")
    page.locator(".switcher summary").click()
    menu = page.locator(".switcher .menu")
    expect(menu.get_by_role("link", name=re.compile(r"Wan studio\s*\/w\/wan-studio\/"))).to_be_visible()
    expect(menu.get_by_role("link", name=re.compile(r"Wan studio\s*\/w\/wan-b\/"))).to_be_visible()
    screenshot("defects-switcher-slugs")
    page.keyboard.press("Escape")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Workspace settings")).to_be_visible()
    # A taken slug is refused in place, naming the field.
    page.get_by_label("Slug").fill("wan-b")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".has-error .error")).to_contain_text("already taken")
    page.get_by_label("Name", exact=True).fill("Wan studio (Berlin)")
    page.get_by_label("Slug").fill("wan-berlin")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/w/wan-berlin/settings/")
    expect(page.get_by_role("status")).to_contain_text("Workspace renamed to “Wan studio (Berlin)”")
    workspace.refresh_from_db()
    assert (workspace.name, workspace.slug) == ("Wan studio (Berlin)", "wan-berlin")

    confirm = page.get_by_label("Type “Wan studio (Berlin)” to confirm")
    confirm.fill("Wan studio")  # the twin's name is not this one's
    page.get_by_role("button", name="Delete “Wan studio (Berlin)”").click()
    expect(page.locator(".danger-zone .error")).to_contain_text("exactly")
    assert Workspace.objects.filter(id=workspace.id).exists()
    screenshot("defects-workspace-settings")
    page.get_by_label("Type “Wan studio (Berlin)” to confirm").fill("Wan studio (Berlin)")
    page.get_by_role("button", name="Delete “Wan studio (Berlin)”").click()
    page.wait_for_url(re.compile(r"/$"))
    expect(page.get_by_role("status")).to_contain_text("Workspace “Wan studio (Berlin)” deleted.")
    assert not Workspace.objects.filter(id=workspace.id).exists()
    # The existing deletion service: the files wait for the purge grace.
    assert StoragePurge.objects.filter(prefix=f"workspaces/{workspace.id}/").exists()
    assert Workspace.objects.filter(id=twin.workspace_id).exists()


def test_viewers_see_settings_without_forms(page, sign_in, owner):
    viewer = MembershipFactory(workspace=owner.workspace, role=Role.VIEWER)
    sign_in(viewer.user)
    page.goto(f"/w/{owner.workspace.slug}/settings/")
    expect(page.get_by_text("Admins and owners rename the workspace.")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Save|Delete"))).to_have_count(0)


# --- 2. the API docs work offline -----------------------------------------------------------------------------


def test_api_docs_render_with_only_the_live_server_reachable(page, sign_in, screenshot, live_server, owner):
    reached = []

    def only_the_live_server(route):
        url = route.request.url
        if url.startswith(live_server.url):
            route.continue_()
        else:
            reached.append(url)
            route.abort()

    page.route("**/*", only_the_live_server)
    sign_in(owner.user)
    page.goto("/api/v1/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("lorasite API")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/workspaces/{slug}/members/").first).to_be_visible()
    screenshot("defects-api-docs-offline")
    assert not reached, reached


# --- 6. the admin lists generation jobs -------------------------------------------------------------------------


def test_admin_lists_generation_jobs(page, screenshot, owner):
    admin_user = UserFactory(username="root", is_staff=True, is_superuser=True)
    lora = make_lora(owner.workspace, owner.user, name="Golden hour", file_size=int(151.5 * 1024 * 1024))
    job = used_in_a_job(lora)
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(admin_user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Generation jobs")).to_be_visible()
    expect(page.get_by_role("link", name="LoRA uploads")).to_be_visible()
    page.get_by_role("link", name="Generation jobs").click()
    page.get_by_role("textbox", name="Search").fill("lighthouse")
    page.get_by_role("button", name="Search").click()
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(str(job.id)[:8])
    screenshot("defects-admin-jobs")
    row.get_by_role("link", name=str(job.id)[:8]).click()
    expect(page.locator(".field-phase_timings")).to_contain_text("Inference: 95.20 s")
    expect(page.locator(".inline-group")).to_contain_text("Golden hour")
    expect(page.locator(".inline-group")).to_contain_text("151.5 MiB")
    assert page.locator("input[name='prompt'], textarea[name='prompt']").count() == 0  # read-only
    screenshot("defects-admin-job")
    page.goto("/admin/loras/lora/")
    expect(page.locator("#result_list")).to_contain_text("151.5 MiB")
