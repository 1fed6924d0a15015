"""Comparing versions: Mann–Whitney U from rating histograms against hand-computed and brute-force values, the
verdicts (significant, not, not enough ratings), the better one marked, and the compare API and page (bad input 400,
another workspace's LoRA 404)."""

import math
from itertools import chain

import pytest

from loras.comparison import MIN_RATINGS, lora_comparison, ratings_test
from tests.factories import GenerationJobFactory, JobLoRAFactory, LoRAFactory, OutputRatingFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db


def histogram(values) -> tuple[int, ...]:
    return tuple(values.count(stars) for stars in range(1, 6))


def brute_force(first: list[int], second: list[int]) -> tuple[float, float]:
    """U and the two-sided asymptotic p (tie and continuity corrections), straight from the textbook."""
    pooled = sorted(chain(first, second))
    rank = {value: (pooled.index(value) + 1 + len(pooled) - pooled[::-1].index(value)) / 2 for value in pooled}
    n1, n2, total = len(first), len(second), len(pooled)
    u = sum(rank[value] for value in first) - n1 * (n1 + 1) / 2
    ties = sum(pooled.count(value) ** 3 - pooled.count(value) for value in set(pooled))
    sigma = math.sqrt(n1 * n2 / 12 * ((total + 1) - ties / (total * (total - 1))))
    z = (abs(u - n1 * n2 / 2) - 0.5) / sigma
    return u, min(math.erfc(z / math.sqrt(2)), 1.0)  # |U − μ| under the ½ correction: p = 1


def test_mann_whitney_against_a_hand_computed_value():
    # Ranks 1.5 1.5 3.5 3.5 5.5 | 5.5 7.5 7.5 9.5 9.5: U = 0.5, σ² = 25/12 · (11 − 30/90), z = −11.5/σ.
    result = ratings_test(histogram([1, 1, 2, 2, 3]), histogram([3, 4, 4, 5, 5]))
    assert result.u == 0.5 and result.method == "normal"
    assert result.p_value == pytest.approx(0.014706, abs=1e-5)


@pytest.mark.parametrize(
    ("first", "second"),
    [([5, 5, 4, 4, 4, 3], [3, 3, 2, 4, 1, 2, 3]), ([1, 2, 3, 4, 5] * 3, [2, 3, 3, 4] * 4), ([4] * 9 + [5], [4] * 8)],
)
def test_mann_whitney_against_brute_force(first, second):
    u, p = brute_force(first, second)
    result = ratings_test(histogram(first), histogram(second))
    assert result.u == pytest.approx(u)
    assert result.p_value == pytest.approx(p)


def test_all_ties_is_no_evidence():
    assert ratings_test(histogram([3, 3]), histogram([3, 3, 3])) is None


def rated_lora(workspace, name, version, stars, *, failed=0):
    lora = LoRAFactory(workspace=workspace, name=name, version=version)
    for value in stars:
        job = GenerationJobFactory(workspace=workspace)
        JobLoRAFactory(job=job, lora=lora)
        OutputRatingFactory(job=job, stars=value)
    for _ in range(failed):
        JobLoRAFactory(job=GenerationJobFactory(workspace=workspace, status="failed"), lora=lora)
    return lora


def test_verdicts_and_marks(workspace):
    good = rated_lora(workspace, "Ink", "2", [5, 5, 4, 5, 4, 5, 4, 5])
    bad = rated_lora(workspace, "Ink", "1", [2, 1, 2, 3, 2, 1, 2], failed=2)
    close = rated_lora(workspace, "Ink", "3", [5, 4, 4, 5, 4, 5])
    few = rated_lora(workspace, "Ink", "4", [5, 5])
    rows = {row.lora.id: row for row in lora_comparison(loras=[bad, good, close, few])}
    assert rows[good.id].best_rating and rows[good.id].verdict is None
    assert rows[bad.id].verdict.significant and rows[bad.id].verdict.text.startswith("Significantly lower (p = ")
    assert not rows[close.id].verdict.significant
    assert rows[close.id].verdict.text.startswith("No significant difference")
    assert rows[few.id].verdict.text == f"Not enough ratings yet (at least {MIN_RATINGS} each)"
    assert rows[bad.id].success_rate == pytest.approx(7 / 9)
    assert not rows[bad.id].best_success
    # Three at 100 %: a tie, so none is marked.
    assert not any(row.best_success for row in rows.values())


def test_compare_api(api, workspace):
    first = rated_lora(workspace, "Ink", "1", [2, 2, 3, 1, 2])
    second = rated_lora(workspace, "Ink", "2", [5, 4, 5, 5, 4], failed=1)
    response = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/compare/", {"ids": f"{first.id},{second.id}"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["alpha"] == 0.05 and "Mann–Whitney U" in body["test"]
    assert [row["version"] for row in body["loras"]] == ["1", "2"]
    assert body["loras"][1]["best_rating"] is True
    assert body["loras"][0]["verdict"]["significant"] is True
    assert body["loras"][0]["best_success"] is True  # 5 of 5 against 5 of 6


@pytest.mark.parametrize("ids", ["", "1", "a,b", "1,1", "1,2,3,4,5"])
def test_compare_api_bad_input(api, workspace, ids):
    response = api.get(f"/api/v1/workspaces/{workspace.slug}/loras/compare/", {"ids": ids})
    assert response.status_code == 400
    assert "ids" in response.json()["errors"]


def test_compare_across_workspaces_is_404(api, workspace, client_for, outsider):
    mine = LoRAFactory(workspace=workspace)
    theirs = LoRAFactory(workspace=WorkspaceFactory())
    url = f"/api/v1/workspaces/{workspace.slug}/loras/compare/"
    assert api.get(url, {"ids": f"{mine.id},{theirs.id}"}).status_code == 404
    assert client_for(outsider).get(url, {"ids": f"{mine.id},{mine.id + 1}"}).status_code == 404


def test_compare_page(client, owner, workspace):
    first = rated_lora(workspace, "Ink", "1", [2, 2, 3, 1, 2])
    second = rated_lora(workspace, "Ink", "2", [5, 4, 5, 5, 4])
    client.force_login(owner)
    html = client.get(f"/w/{workspace.slug}/loras/compare/?ids={first.id}&ids={second.id}").content.decode()
    assert "Ink v1" in html and "Ink v2" in html
    assert "★ best rated" in html
    assert "Significantly lower (p = " in html
    assert "α = 0.05" in html
    response = client.get(f"/w/{workspace.slug}/loras/compare/?ids={first.id}")
    assert response.status_code == 400
    assert "Compare 2 to 4 different LoRAs" in response.content.decode()
    other = LoRAFactory(workspace=WorkspaceFactory())
    assert client.get(f"/w/{workspace.slug}/loras/compare/?ids={first.id}&ids={other.id}").status_code == 404
    # The LoRA page's Versions part links here.
    page = client.get(f"/w/{workspace.slug}/loras/{second.id}/").content.decode()
    assert f"/w/{workspace.slug}/loras/compare/?ids={first.id}&amp;ids={second.id}" in page
