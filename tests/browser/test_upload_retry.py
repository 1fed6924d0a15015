"""The upload dialog against a proxy that times out a `complete` the server goes on to finish: the dialog
asks `complete` again (it is idempotent) and shows the LoRA, instead of aborting an upload that became one."""

import re

import pytest
from playwright.sync_api import expect

from loras.models import LoRA, LoRAUpload
from tests.factories import MembershipFactory
from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_timed_out_complete_is_asked_again_not_aborted(page, sign_in, s3_keys, tmp_path):
    owner = MembershipFactory(role=Role.OWNER, workspace__name="Retry studio", workspace__slug="retry-studio")
    path = write_lora(tmp_path / "slow_proxy.safetensors")
    completes, deletes = [], []

    def proxy_times_out_once(route):
        completes.append(route.request.url)
        if len(completes) == 1:
            route.fetch()  # the server assembles the upload and creates the LoRA...
            return route.fulfill(status=504, body="upstream timed out")  # ...but the proxy gave up first
        return route.continue_()

    page.route(re.compile(r".*/loras/uploads/[^/]+/complete/$"), proxy_times_out_once)
    page.on("request", lambda request: deletes.append(request.url) if request.method == "DELETE" else None)
    sign_in(owner.user)
    page.goto("/w/retry-studio/loras/")
    page.get_by_role("button", name="Upload LoRAs").click()
    dialog = page.get_by_role("dialog", name="Upload LoRAs")
    dialog.locator('input[type="file"]').set_input_files(path)
    row = dialog.locator(".upload-item").filter(has_text=path.name)
    # `processing` until an ingest worker has checked it: the suite's session worker may already run.
    expect(row).to_have_attribute("data-state", re.compile("^(processing|ready)$"), timeout=30_000)
    # The dialog may show `processing` while its second complete is still in flight; wait for the row to exist,
    # letting Playwright serve the route handler meanwhile.
    for _ in range(120):
        if len(completes) == 2 and LoRA.objects.filter(original_filename=path.name).exists():
            break
        page.wait_for_timeout(250)
    lora = LoRA.objects.get(original_filename=path.name)
    expect(page.locator(f"#lora-{lora.id}")).to_be_visible()
    assert len(completes) == 2 and deletes == []
    assert not LoRAUpload.objects.exists()
    assert s3_keys(f"workspaces/{owner.workspace_id}/") == [lora.file.name]
