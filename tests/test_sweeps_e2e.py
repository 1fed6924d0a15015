"""A 2×2 sweep end to end on the demo Wan 2.2 model with a real Celery worker: four ordinary jobs, the grid filled
with thumbnails, and a contact sheet PNG with the axis labels around the tiles."""

import time
from io import BytesIO

import pytest
import requests
from PIL import Image

from tests.lora_files import write_lora
from workspaces.models import Role

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wait_for(api, url: str, *, until, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(url).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, f"timed out waiting; last state: {body}"
        time.sleep(0.5)


def test_sweep_2x2_on_the_demo_model(celery_worker, workspace, member_of, client_for, tmp_path):
    api = client_for(member_of(Role.OWNER))
    base = f"/api/v1/workspaces/{workspace.slug}"
    path = write_lora(tmp_path / "style_high_noise.safetensors", family="wan-demo", blocks=2, std=0.3, seed=1)
    with open(path, "rb") as handle:
        lora_id = api.post(f"{base}/loras/", {"file": handle, "name": "style"}, format="multipart").json()["id"]
    ready = wait_for(api, f"{base}/loras/{lora_id}/", until=lambda lora: lora["status"] != "processing")
    assert ready["status"] == "ready", ready["error"]

    body = {
        "model": "wan22-a14b-demo",
        "prompt": "a lighthouse at dusk",
        "params": {"steps": 1, "num_frames": 5, "width": 32, "height": 32, "seed": 5},
        "loras": [{"lora_id": lora_id, "expert": "high"}],
        "x_axis": {"kind": "weight", "lora_id": lora_id, "values": [0.0, 1.0]},
        "y_axis": {"kind": "guidance", "values": [1.0, 4.0]},
    }
    assert api.post(f"{base}/sweeps/?dry_run=1", body, format="json").json()["cells"] == 4
    created = api.post(f"{base}/sweeps/", body, format="json")
    assert created.status_code == 201, created.json()
    sweep = wait_for(api, f"{base}/sweeps/{created.json()['id']}/", until=lambda s: s["status"] != "running")
    assert sweep["succeeded"] == 4, sweep
    assert all(cell["thumb_url"] for cell in sweep["cells"])

    sheet = api.get(f"{base}/sweeps/{sweep['id']}/contact-sheet/")
    assert sheet.status_code == 200, sheet.json()
    png = requests.get(sheet.json()["url"], timeout=30)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(BytesIO(png.content))
    assert image.width > 2 * 32 and image.height > 2 * 32  # two tiles a row, two rows, and the labels
