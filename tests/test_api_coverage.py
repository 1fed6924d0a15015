"""Every operation /api/v1/schema/ documents, called once for real with a valid request: it answers its
documented success, and the answer matches the schema (status, content type and body)."""

from pathlib import Path

import numpy as np
import pytest
import requests
from django.test import override_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import Client

from generation.models import GenerationJob
from generation.runtime.encode import write_png
from loras import services as lora_services
from lorasite.object_store import get_object_store
from tests.api_schema import SCHEMA, in_process_wsgi  # noqa: F401 (a fixture)
from tests.factories import UserFactory, WorkspaceFactory
from tests.ingest import ingest_ready
from tests.lora_files import write_lora
from workspaces.models import Membership, Role

pytestmark = pytest.mark.django_db

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
DEMO_MODEL = "wan22-a14b-demo"
API = "/api/v1"


class Caller:
    """Calls documented operations by their schema path (without the /api/v1 prefix) and records which were called."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.called: set[tuple[str, str]] = set()

    def __call__(self, method: str, path: str, expect: int, *, body=NOT_SET, media_type=None, **params) -> dict:
        operation = SCHEMA[API + path][method]
        path_names = {p.name for p in operation.path_parameters}
        case = operation.Case(
            path_parameters={k: v for k, v in params.items() if k in path_names},
            query={k: v for k, v in params.items() if k not in path_names},
            body=body,
            media_type=media_type,
        )
        response = case.call(headers=self.headers)
        assert response.status_code == expect, (method, path, response.status_code, response.text[:500])
        case.validate_response(response, checks=CHECKS)
        self.called.add((method, path))
        return response.json() if response.content else {}

    def upload(self, path: str, expect: int, *, file: Path, method: str = "POST", **path_parameters) -> dict:
        """A multipart file upload, sent by Werkzeug's client itself: schemathesis names a file part after
        its field, and the API takes the extension from the part's filename."""
        operation = SCHEMA[API + path][method]
        with open(file, "rb") as handle:
            response = Client(SCHEMA.app).open(
                API + path.format(**path_parameters),
                method=method,
                data={"file": (handle, file.name)},
                headers=self.headers,
            )
        assert response.status_code == expect, (path, response.status_code, response.get_data(as_text=True)[:500])
        operation.validate_response(response)
        self.called.add((method, path))
        return response.json


def _put_parts(started: dict, path: Path) -> list[dict]:
    data = path.read_bytes()
    parts = []
    for part in started["parts"]:
        offset = (part["part_number"] - 1) * started["part_size"]
        response = requests.put(part["url"], data=data[offset : offset + started["part_size"]], timeout=30)
        assert response.status_code == 200, response.text
        parts.append({"part_number": part["part_number"], "etag": response.headers["ETag"]})
    return parts


def test_every_documented_operation_answers_its_documented_success(in_process_wsgi, demo_models, tmp_path):  # noqa: F811
    owner = UserFactory(username="owner")
    owner.set_password("pw-for-the-token")
    owner.save()
    newcomer = UserFactory(username="newcomer")
    workspace = WorkspaceFactory(slug="acme")
    actor = Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    call = Caller({"Authorization": f"Token {Token.objects.create(user=owner).key}"})
    slug = workspace.slug

    assert call(
        "POST",
        "/auth/token/",
        200,
        body={"username": "owner", "password": "pw-for-the-token"},
        media_type="application/json",
    )["token"]
    assert any(model["key"] == DEMO_MODEL for model in call("GET", "/models/", 200))
    owner.is_staff = True  # the GPU workers are for operators only
    owner.save(update_fields=["is_staff"])
    assert call("GET", "/workers/", 200)["routing"] in (True, False)
    owner.is_staff = False
    owner.save(update_fields=["is_staff"])

    # Workspaces and members
    created = call("POST", "/workspaces/", 201, body={"name": "Scratch"})
    assert call("GET", "/workspaces/", 200)["count"] == 2
    call("GET", "/workspaces/{slug}/", 200, slug=slug)
    call("PATCH", "/workspaces/{slug}/", 200, slug=created["slug"], body={"name": "Scratch 2"})
    call("POST", "/workspaces/{slug}/members/", 201, slug=slug, body={"user": "newcomer", "role": "viewer"})
    assert call("GET", "/workspaces/{slug}/members/", 200, slug=slug)["count"] == 2
    call("PATCH", "/workspaces/{slug}/members/{user_id}/", 200, slug=slug, user_id=newcomer.id, body={"role": "member"})
    call("DELETE", "/workspaces/{slug}/members/{user_id}/", 204, slug=slug, user_id=newcomer.id)
    call("DELETE", "/workspaces/{slug}/", 204, slug=created["slug"])

    # LoRAs: through the app, by import, by direct multipart (completed and aborted)
    ready = ingest_ready(
        actor=actor,
        path=write_lora(tmp_path / "ready.safetensors", seed=1, blocks=1),
        options=lora_services.LoRAOptions(name="Ready"),
    )
    uploaded = call.upload(
        "/workspaces/{slug}/loras/",
        201,
        slug=slug,
        file=write_lora(tmp_path / "through_app.safetensors", seed=2, blocks=1),
    )
    import_dir = tmp_path / "imports"
    (import_dir / slug).mkdir(parents=True)
    write_lora(import_dir / slug / "imported.safetensors", seed=3, blocks=1)
    with override_settings(LORASITE_IMPORT_DIRS=[str(import_dir)]):
        call("POST", "/workspaces/{slug}/loras/import/", 201, slug=slug, body={"file_path": "imported.safetensors"})
    path = write_lora(tmp_path / "multipart.safetensors", seed=4, blocks=1)
    started = call(
        "POST",
        "/workspaces/{slug}/loras/uploads/",
        201,
        slug=slug,
        body={"filename": path.name, "size": path.stat().st_size},
    )
    call("GET", "/workspaces/{slug}/loras/uploads/{upload_id}/", 200, slug=slug, upload_id=started["upload_id"])
    call(
        "POST",
        "/workspaces/{slug}/loras/uploads/{upload_id}/complete/",
        201,
        slug=slug,
        upload_id=started["upload_id"],
        body={"parts": _put_parts(started, path)},
    )
    aborted = call(
        "POST", "/workspaces/{slug}/loras/uploads/", 201, slug=slug, body={"filename": "b.safetensors", "size": 9}
    )
    call("DELETE", "/workspaces/{slug}/loras/uploads/{upload_id}/", 204, slug=slug, upload_id=aborted["upload_id"])
    assert call("GET", "/workspaces/{slug}/loras/", 200, slug=slug)["count"] == 4
    assert call("GET", "/workspaces/{slug}/loras/versions/", 200, slug=slug, name="Ready")["count"] == 1
    call("GET", "/workspaces/{slug}/loras/{lora_id}/", 200, slug=slug, lora_id=ready.id)
    call(
        "PATCH", "/workspaces/{slug}/loras/{lora_id}/", 200, slug=slug, lora_id=uploaded["id"], body={"name": "Renamed"}
    )
    assert call("GET", "/workspaces/{slug}/loras/{lora_id}/download/", 200, slug=slug, lora_id=ready.id)["url"]
    call("DELETE", "/workspaces/{slug}/loras/{lora_id}/", 204, slug=slug, lora_id=uploaded["id"])

    # Pairs and bulk actions
    low = ingest_ready(
        actor=actor,
        path=write_lora(tmp_path / "low.safetensors", seed=5, blocks=1),
        options=lora_services.LoRAOptions(name="Low", expert="low"),
    )
    pair = call("POST", "/workspaces/{slug}/pairs/", 201, slug=slug, body={"high": ready.id, "low": low.id})
    assert call("GET", "/workspaces/{slug}/pairs/", 200, slug=slug)["count"] == 1
    call("GET", "/workspaces/{slug}/pairs/{pair_id}/", 200, slug=slug, pair_id=pair["id"])
    call("PATCH", "/workspaces/{slug}/pairs/{pair_id}/", 200, slug=slug, pair_id=pair["id"], body={"weight_low": 0.5})
    call("DELETE", "/workspaces/{slug}/pairs/{pair_id}/", 204, slug=slug, pair_id=pair["id"])
    bulk = {"ids": [low.id], "action": "tag", "tags": ["paired"]}
    assert call("POST", "/workspaces/{slug}/loras/bulk/", 200, slug=slug, body=bulk)["changed"] == 1

    # Evaluation: versions grouped by name, two LoRAs compared
    groups = call("GET", "/workspaces/{slug}/loras/", 200, slug=slug, group_by_name="true")["results"]
    assert {group["name"] for group in groups} >= {"Low"}
    compared = call("GET", "/workspaces/{slug}/loras/compare/", 200, slug=slug, ids=f"{ready.id},{low.id}")
    assert [row["id"] for row in compared["loras"]] == [ready.id, low.id]

    # Generation jobs
    job = call(
        "POST",
        "/workspaces/{slug}/generations/",
        201,
        slug=slug,
        body={"model": DEMO_MODEL, "prompt": "a cat", "loras": [{"lora_id": ready.id, "weight": 0.8}]},
    )
    assert call("GET", "/workspaces/{slug}/generations/", 200, slug=slug)["count"] == 1
    call("GET", "/workspaces/{slug}/generations/{job_id}/", 200, slug=slug, job_id=job["id"])
    call("POST", "/workspaces/{slug}/generations/{job_id}/cancel/", 200, slug=slug, job_id=job["id"])
    call("POST", "/workspaces/{slug}/generations/{job_id}/retry/", 201, slug=slug, job_id=job["id"])

    # Recipes: saved, read, edited, run, saved from the finished (cancelled) job, deleted
    body = {"name": "Cat", "model": DEMO_MODEL, "prompt_template": "{trigger}, a cat", "loras": [{"lora_id": ready.id}]}
    saved = call("POST", "/workspaces/{slug}/recipes/", 201, slug=slug, body=body)
    assert call("GET", "/workspaces/{slug}/recipes/", 200, slug=slug)["count"] == 1
    call("GET", "/workspaces/{slug}/recipes/{recipe_id}/", 200, slug=slug, recipe_id=saved["id"])
    call(
        "PATCH", "/workspaces/{slug}/recipes/{recipe_id}/", 200, slug=slug, recipe_id=saved["id"], body={"name": "Dog"}
    )
    call("POST", "/workspaces/{slug}/recipes/{recipe_id}/run/", 201, slug=slug, recipe_id=saved["id"], body={"seed": 1})
    call("POST", "/workspaces/{slug}/recipes/from-job/", 201, slug=slug, body={"job_id": job["id"]})
    call("DELETE", "/workspaces/{slug}/recipes/{recipe_id}/", 204, slug=slug, recipe_id=saved["id"])
    # Ratings: stars for a succeeded output (as if the worker had finished the job), then removed
    GenerationJob.objects.filter(id=job["id"]).update(status="succeeded")
    rating = "/workspaces/{slug}/generations/{job_id}/rating/"
    assert call("PUT", rating, 200, slug=slug, job_id=job["id"], body={"stars": 4})["mine"] == 4
    call("DELETE", rating, 204, slug=slug, job_id=job["id"])
    # Previews: an uploaded image, replaced by the (succeeded) job's output, then removed
    preview, image = "/workspaces/{slug}/loras/{lora_id}/preview/", tmp_path / "preview.png"
    write_png(np.full((40, 60, 3), 200, dtype=np.uint8), image)
    assert call.upload(preview, 200, file=image, method="PUT", slug=slug, lora_id=ready.id)["kind"] == "image"
    assert call("GET", preview, 200, slug=slug, lora_id=ready.id)["source"] == "upload"
    output_key = f"workspaces/{workspace.id}/outputs/{job['id']}/output.png"
    get_object_store().save_file(output_key, image)
    GenerationJob.objects.filter(id=job["id"]).update(output_key=output_key)
    from_job = {"job_id": job["id"]}
    assert (
        call("POST", preview, 200, slug=slug, lora_id=ready.id, body=from_job, media_type="application/json")["source"]
        == "job"
    )
    call("DELETE", preview, 204, slug=slug, lora_id=ready.id)
    call("DELETE", "/workspaces/{slug}/generations/{job_id}/", 204, slug=slug, job_id=job["id"])

    # What made this? An output PNG as the worker writes it, read back
    png = tmp_path / "output.png"
    write_png(np.zeros((8, 8, 3), dtype=np.uint8), png, provenance=job["provenance"])
    recipe = call.upload("/workspaces/{slug}/provenance/", 200, slug=slug, file=png)
    assert recipe["loras"][0]["lora_id"] == ready.id
    # An input image for an image-to-video job
    assert call.upload("/workspaces/{slug}/generations/inputs/", 201, slug=slug, file=png)["width"] == 8

    # Experiments: a 2-cell sweep (cost first, cancelled as a whole; its contact sheet once a cell has an output) and
    # an A/B test (cost first, results, the caller's blind pairs, a vote once both outputs exist)
    sweep_body = {
        "model": DEMO_MODEL,
        "prompt": "a cat",
        "loras": [{"lora_id": ready.id}],
        "x_axis": {"kind": "weight", "lora_id": ready.id, "values": [0.0, 1.0]},
    }
    assert (
        call("POST", "/workspaces/{slug}/sweeps/", 200, slug=slug, body={**sweep_body, "dry_run": True})["cells"] == 2
    )
    sweep = call("POST", "/workspaces/{slug}/sweeps/", 201, slug=slug, body=sweep_body)
    assert call("GET", "/workspaces/{slug}/sweeps/", 200, slug=slug)["count"] == 1
    call("GET", "/workspaces/{slug}/sweeps/{sweep_id}/", 200, slug=slug, sweep_id=sweep["id"])
    call("POST", "/workspaces/{slug}/sweeps/{sweep_id}/cancel/", 200, slug=slug, sweep_id=sweep["id"])
    first_cell = GenerationJob.objects.filter(sweep_cell__sweep_id=sweep["id"], sweep_cell__x=0)
    first_cell.update(status="succeeded", output_key=output_key)
    sheet = call("GET", "/workspaces/{slug}/sweeps/{sweep_id}/contact-sheet/", 200, slug=slug, sweep_id=sweep["id"])
    assert sheet["url"]
    ab_body = {
        "model": DEMO_MODEL,
        "prompts": ["a cat"],
        "seeds": [1],
        "stack_a": {"loras": [{"lora_id": ready.id, "weight": 0.5}]},
        "stack_b": {"loras": [{"lora_id": ready.id, "weight": 1.0}]},
    }
    assert call("POST", "/workspaces/{slug}/abtests/", 200, slug=slug, body={**ab_body, "dry_run": True})["jobs"] == 2
    test = call("POST", "/workspaces/{slug}/abtests/", 201, slug=slug, body=ab_body)
    assert call("GET", "/workspaces/{slug}/abtests/", 200, slug=slug)["count"] == 1
    call("GET", "/workspaces/{slug}/abtests/{test_id}/", 200, slug=slug, test_id=test["id"])
    pairs = call("GET", "/workspaces/{slug}/abtests/{test_id}/pairs/", 200, slug=slug, test_id=test["id"])
    GenerationJob.objects.filter(prompt="a cat", status="queued").update(status="succeeded", output_key=output_key)
    vote = "/workspaces/{slug}/abtests/{test_id}/pairs/{pair_id}/vote/"
    voted = call("PUT", vote, 200, slug=slug, test_id=test["id"], pair_id=pairs[0]["id"], body={"choice": "tie"})
    assert voted["my_vote"] == "tie"

    operations = [result.ok() for result in SCHEMA.get_all_operations()]  # an Err (a broken operation) raises here
    documented = {(operation.method.upper(), operation.path.removeprefix(API)) for operation in operations}
    assert call.called == documented, f"operations without a test: {sorted(documented - call.called)}"


def test_every_operation_documents_503_and_every_operation_with_a_body_413():
    for result in SCHEMA.get_all_operations():
        operation = result.ok()
        responses = operation.definition.raw["responses"]
        assert "503" in responses, operation.label
        assert ("413" in responses) == ("requestBody" in operation.definition.raw), operation.label
