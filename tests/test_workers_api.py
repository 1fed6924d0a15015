"""What operators and users see of the GPU workers: `GET /api/v1/workers/` (staff), the operator page
(/ops/workers/, staff) and the LoRA page's "where it is" line, from records announced in the worker registry."""

import pytest

from generation.queues import worker_queue
from tests.factories import MembershipFactory
from tests.workers_fixtures import MODEL, staff
from workspaces.models import Role

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.mark.django_db
class TestWorkersAPI:
    URL = "/api/v1/workers/"

    def test_anonymous_is_401_and_a_member_who_is_not_staff_is_403(self, api_client, client_for, owner):
        assert api_client.get(self.URL).status_code == 401
        response = client_for(owner).get(self.URL)
        assert response.status_code == 403 and response.json()["code"] == "permission_denied"

    def test_staff_see_each_worker_with_what_it_holds_and_its_queues(self, announced, client_for, owner):
        (first, second), lora = announced
        response = client_for(staff(owner)).get(self.URL)
        assert response.status_code == 200, response.json()
        body = response.json()
        workers = {worker["name"]: worker for worker in body["workers"]}
        w1 = workers[first]
        assert w1["state"] == "idle" and w1["queue"] == worker_queue(first) and w1["backlog"] == 0
        assert w1["pipelines"] == [MODEL] and w1["free_memory_bytes"] == 40 * 1024**3
        assert {(a["tier"], a["name"]) for a in w1["adapters"]} == {("resident", lora.name), ("host_tier", lora.name)}
        assert w1["cache_fill"] == 0.25 and w1["counters"] == {"jobs": 3, "downloads": 1}
        assert workers[second]["adapters"] == [] and workers[second]["free_memory_bytes"] is None
        assert body["queues"][MODEL] == 0 and body["k"] >= 1 and body["load_factor"] >= 1

    def test_an_unreadable_registry_is_503(self, client_for, owner, settings):
        settings.CELERY_BROKER_URL = UNREACHABLE_REDIS
        response = client_for(staff(owner)).get(self.URL)
        assert response.status_code == 503 and response.json()["service"] == "worker registry"


@pytest.mark.django_db
class TestPages:
    def test_the_operator_page_is_for_staff_only(self, announced, client, owner):
        (first, _), lora = announced
        client.force_login(owner)
        assert client.get("/ops/workers/").status_code == 404  # not staff: the page does not exist for them
        assert 'href="/ops/workers/"' not in client.get("/").content.decode()
        staff(owner)
        assert 'href="/ops/workers/"' in client.get("/").content.decode()  # staff find it in the top bar
        page = client.get("/ops/workers/").content.decode()
        assert first.split("@")[0] in page and lora.name in page and "25%" in page

    def test_the_lora_page_says_where_the_lora_is(self, announced, client, workspace):
        (first, second), lora = announced
        member = MembershipFactory(workspace=workspace, role=Role.VIEWER).user
        client.force_login(member)
        page = client.get(f"/w/{workspace.slug}/loras/{lora.id}/").content.decode()
        assert f"resident on {first.split('@')[0]}, on disk at {second.split('@')[0]}" in page
