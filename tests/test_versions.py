"""Version timelines: GET …/loras/?group_by_name=true (groups by name, versions in order of creation, with size,
rank, training headline, status and metrics; filters apply; paginated by name) and the LoRA page's Versions part."""

import pytest

from tests.factories import GenerationJobFactory, JobLoRAFactory, LoRAFactory, OutputRatingFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db


def url(workspace, query: str = "group_by_name=true") -> str:
    return f"/api/v1/workspaces/{workspace.slug}/loras/?{query}"


@pytest.fixture
def versions(workspace):
    first = LoRAFactory(
        workspace=workspace,
        name="Ink",
        version="1",
        rank=16,
        training_metadata={"epochs": 10, "steps": 2000, "learning_rate": 0.0001, "train_images": 40},
    )
    second = LoRAFactory(
        workspace=workspace,
        name="Ink",
        version="2",
        rank=32,
        status="failed",
        training_metadata={
            "epoch": 4,
            "max_steps": 800,
            "dataset_dirs": {"a": {"img_count": 12}, "b": {"img_count": 3}},
        },
        training={"hyperparameters": {"learning_rate": 0.0005}},
    )
    other = LoRAFactory(workspace=workspace, name="Anime", version="1")
    return first, second, other


def test_groups_by_name_in_order_of_creation(api, workspace, versions):
    first, second, other = versions
    job = GenerationJobFactory(workspace=workspace)
    JobLoRAFactory(job=job, lora=first)
    OutputRatingFactory(job=job, stars=4)
    LoRAFactory(workspace=WorkspaceFactory(), name="Ink", version="9")  # another workspace's: not listed

    response = api.get(url(workspace))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 2
    assert [group["name"] for group in body["results"]] == ["Anime", "Ink"]
    ink = body["results"][1]["versions"]
    assert [row["version"] for row in ink] == ["1", "2"]
    assert ink[0]["id"] == first.id
    assert ink[0]["rank"] == 16 and ink[1]["rank"] == 32
    assert ink[0]["file_size"] == first.file_size
    assert ink[1]["status"] == "failed"
    assert ink[0]["training"] == {
        "epochs": 10,
        "steps": 2000,
        "learning_rate": 0.0001,
        "dataset_size": 40,
        "text": "10 epochs · 2,000 steps · LR 1e-4 · 40 images",
    }
    # The record's learning rate wins over the file's; the dataset size from the folders' counts.
    assert ink[1]["training"]["text"] == "4 epochs · 800 steps · LR 5e-4 · 15 images"
    assert ink[0]["metrics"]["generations"] == 1
    assert ink[0]["metrics"]["rating_average"] == 4.0
    assert ink[1]["metrics"]["generations"] == 0


def test_filters_and_pages_apply(api, workspace, versions):
    body = api.get(url(workspace, "group_by_name=true&status=ready")).json()
    assert [[row["version"] for row in group["versions"]] for group in body["results"]] == [["1"], ["1"]]
    body = api.get(url(workspace, "group_by_name=true&page_size=1&page=2")).json()
    assert body["count"] == 2
    assert [group["name"] for group in body["results"]] == ["Ink"]
    assert len(body["results"][0]["versions"]) == 2


def test_bad_input_is_400(api, workspace):
    response = api.get(url(workspace, "group_by_name=maybe"))
    assert response.status_code == 400
    assert "group_by_name" in response.json()["errors"]
    response = api.get(url(workspace, "group_by_name=true&status=nope"))
    assert response.status_code == 400
    assert "status" in response.json()["errors"]


def test_without_group_by_name_the_plain_list(api, workspace, versions):
    body = api.get(url(workspace, "")).json()
    assert body["count"] == 3
    assert "versions" not in body["results"][0]


def test_another_workspace_is_404(client_for, outsider, workspace):
    assert client_for(outsider).get(url(workspace)).status_code == 404


def test_queries_stay_fixed(api, workspace, django_assert_max_num_queries):
    for index in range(12):
        LoRAFactory(workspace=workspace, name=f"Style {index % 3}", version=str(index))
    with django_assert_max_num_queries(8):
        response = api.get(url(workspace))
    assert sum(len(group["versions"]) for group in response.json()["results"]) == 12


def test_lora_page_versions_part(client, owner, workspace, versions):
    first, second, _ = versions
    client.force_login(owner)
    html = client.get(f"/w/{workspace.slug}/loras/{second.id}/").content.decode()
    assert 'id="lora-versions"' in html
    assert "10 epochs · 2,000 steps · LR 1e-4 · 40 images" in html
    assert f'href="/w/{workspace.slug}/loras/{first.id}/"' in html
