"""Reads for sweeps and A/B tests: the grid of a sweep with its cells' state and thumbnails, axis labels."""

import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q, QuerySet

from generation.experiments import stats
from generation.models import (
    FINISHED,
    ABChoice,
    ABPair,
    ABTest,
    ABVote,
    GenerationJob,
    JobStatus,
    Sweep,
    SweepAxisKind,
    SweepCell,
)
from generation.selectors import job_output_urls
from loras.models import LoRA, Status
from lorasite.errors import NotFound
from workspaces.models import Workspace


def sweep_list(*, workspace: Workspace) -> QuerySet[Sweep]:
    """Newest first, each with `cell_count` and `finished_count` (aggregated, not loaded)."""
    return (
        Sweep.objects.filter(workspace=workspace)
        .select_related("created_by")
        .annotate(
            cell_count=Count("cells"),
            finished_count=Count("cells", filter=Q(cells__job__status__in=FINISHED) | Q(cells__job__isnull=True)),
        )
        .order_by("-created_at")
    )


def sweep_get(*, workspace: Workspace, sweep_id: int) -> Sweep:
    try:
        return sweep_list(workspace=workspace).get(id=sweep_id)
    except (Sweep.DoesNotExist, ValueError):
        raise NotFound("Sweep not found.") from None


def sweep_lora_choices(*, workspace: Workspace) -> QuerySet[LoRA]:
    """The LoRAs a sweep can use: ready and active (the job checks the rest, per model)."""
    return LoRA.objects.alive().filter(workspace=workspace, status=Status.READY, is_active=True).order_by("name", "id")


def lora_version_ids(*, loras: QuerySet[LoRA]) -> dict[int, list[int]]:
    """Each LoRA's id → the ids of every version of its name among `loras`, oldest first (a version axis)."""
    by_name: dict[str, list[int]] = {}
    for lora_id, name in loras.order_by("created_at", "id").values_list("id", "name"):
        by_name.setdefault(name, []).append(lora_id)
    return {lora_id: ids for ids in by_name.values() for lora_id in ids}


def _lora_names(workspace: Workspace, ids: set[int]) -> dict[int, LoRA]:
    return {lora.id: lora for lora in LoRA.objects.filter(workspace=workspace, id__in=ids)}


def _axis_title(axis: dict, loras: dict[int, LoRA]) -> str:
    kind = SweepAxisKind(axis["kind"])
    lora = loras.get(axis.get("lora_id"))
    if kind == SweepAxisKind.WEIGHT:
        return f"{lora.name if lora else 'LoRA'} weight"
    if kind == SweepAxisKind.WEIGHT_LOW:
        return f"{lora.name if lora else 'LoRA'} low-noise weight"
    if kind == SweepAxisKind.VERSION:
        return f"{lora.name if lora else 'LoRA'} version"
    return kind.label


def _value_label(axis: dict, value, loras: dict[int, LoRA]) -> str:
    kind = axis["kind"]
    if kind == SweepAxisKind.VERSION:
        lora = loras.get(value)
        return f"v{lora.version}" if lora else f"LoRA {value}"
    if kind == SweepAxisKind.STEPS:
        return f"{value} steps"
    if kind == SweepAxisKind.GUIDANCE:
        return f"cfg {value:g}"
    return f"{value:.2f}"


@dataclass(frozen=True)
class GridCell:
    x: int
    y: int
    job: GenerationJob | None
    thumb_url: str | None
    label: str  # "anime weight 0.50 · detail weight 1.00", for screen readers and titles

    @property
    def status(self) -> str:
        return self.job.status if self.job else JobStatus.CANCELLED


@dataclass(frozen=True)
class GridRow:
    label: str  # the second axis's value ("" for a one-axis sweep)
    cells: list[GridCell]


@dataclass(frozen=True)
class SweepGrid:
    sweep: Sweep
    x_title: str
    y_title: str
    x_labels: list[str]
    y_labels: list[str]  # empty for a one-axis sweep
    rows: list[GridRow]

    @property
    def cells(self) -> list[GridCell]:
        return [cell for row in self.rows for cell in row.cells]

    @property
    def finished(self) -> int:
        return sum(cell.status in FINISHED for cell in self.cells)

    @property
    def succeeded(self) -> int:
        return sum(cell.status == JobStatus.SUCCEEDED for cell in self.cells)

    @property
    def total(self) -> int:
        return len(self.cells)

    @property
    def live(self) -> bool:
        """Whether a cell is still queued or running: the page keeps polling until none is."""
        return self.finished < self.total

    @property
    def status(self) -> str:
        if self.live:
            return "running"
        return "cancelled" if self.sweep.cancelled_at else "finished"


def sweep_grid(*, sweep: Sweep, with_urls: bool = True) -> SweepGrid:
    """The sweep's cells in rows (y) and columns (x), with axis labels; three queries whatever the size."""
    cells = list(SweepCell.objects.filter(sweep=sweep).select_related("job"))
    axes = [sweep.x_axis, *([sweep.y_axis] if sweep.y_axis else [])]
    ids = {axis.get("lora_id") for axis in axes} | {
        value for axis in axes if axis["kind"] == SweepAxisKind.VERSION for value in axis["values"]
    }
    loras = _lora_names(sweep.workspace, {i for i in ids if i is not None})
    width = len(sweep.x_axis["values"])
    height = len(sweep.y_axis["values"]) if sweep.y_axis else 1
    by_xy = {(cell.x, cell.y): cell for cell in cells}
    x_title = _axis_title(sweep.x_axis, loras)
    y_title = _axis_title(sweep.y_axis, loras) if sweep.y_axis else ""
    x_labels = [_value_label(sweep.x_axis, v, loras) for v in sweep.x_axis["values"]]
    y_labels = [_value_label(sweep.y_axis, v, loras) for v in sweep.y_axis["values"]] if sweep.y_axis else []
    rows = []
    for y in range(height):
        row = []
        for x in range(width):
            cell = by_xy.get((x, y))
            job = cell.job if cell else None
            url = job_output_urls(job=job)["thumb_url"] if with_urls and job and job.thumb_key else None
            label = f"{x_title} {x_labels[x]}" + (f" · {y_title} {y_labels[y]}" if y_labels else "")
            row.append(GridCell(x=x, y=y, job=job, thumb_url=url, label=label))
        rows.append(GridRow(label=y_labels[y] if y_labels else "", cells=row))
    return SweepGrid(sweep=sweep, x_title=x_title, y_title=y_title, x_labels=x_labels, y_labels=y_labels, rows=rows)


# --- A/B tests ------------------------------------------------------------------------------------------------

# Below this many decisive (non-tie) votes a win rate is shown without a verdict: "not enough votes yet".
MIN_DECISIVE_VOTES = 10


def abtest_list(*, workspace: Workspace) -> QuerySet[ABTest]:
    return (
        ABTest.objects.filter(workspace=workspace)
        .select_related("created_by")
        .annotate(pair_count=Count("pairs", distinct=True), vote_count=Count("pairs__votes"))
        .order_by("-created_at")
    )


def abtest_get(*, workspace: Workspace, test_id: int) -> ABTest:
    try:
        return ABTest.objects.select_related("created_by").get(workspace=workspace, id=test_id)
    except (ABTest.DoesNotExist, ValueError):
        raise NotFound("A/B test not found.") from None


def abpair_get(*, test: ABTest, pair_id: int) -> ABPair:
    try:
        return ABPair.objects.select_related("test", "job_a", "job_b").get(test=test, id=pair_id)
    except (ABPair.DoesNotExist, ValueError):
        raise NotFound("Pair not found.") from None


@dataclass(frozen=True)
class WinRate:
    """Votes for A against B: ties counted apart; the win rate is A's share of the decisive votes."""

    label: str
    wins_a: int
    wins_b: int
    ties: int

    @property
    def decisive(self) -> int:
        return self.wins_a + self.wins_b

    @property
    def rate(self) -> float | None:
        return self.wins_a / self.decisive if self.decisive else None

    @property
    def interval(self) -> stats.Interval | None:
        return stats.wilson_interval(self.wins_a, self.decisive)

    @property
    def p_value(self) -> float | None:
        return stats.binomial_test(self.wins_a, self.decisive)

    @property
    def enough(self) -> bool:
        return self.decisive >= MIN_DECISIVE_VOTES

    @property
    def verdict(self) -> str:
        """'A is better', 'B is better', 'no significant difference' or 'not enough votes yet' (α = 0.05)."""
        if not self.enough:
            return "not enough votes yet"
        if not stats.significant(self.p_value):
            return "no significant difference"
        return "A is better" if self.wins_a > self.wins_b else "B is better"

    def as_dict(self) -> dict:
        interval = self.interval
        return {
            "label": self.label,
            "wins_a": self.wins_a,
            "wins_b": self.wins_b,
            "ties": self.ties,
            "win_rate_a": self.rate,
            "ci_low": interval.low if interval else None,
            "ci_high": interval.high if interval else None,
            "p_value": self.p_value,
            "enough_votes": self.enough,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class ABResults:
    test: ABTest
    overall: WinRate
    per_prompt: list[WinRate]
    jobs_total: int
    jobs_finished: int
    voters: int

    @property
    def live(self) -> bool:
        return self.jobs_finished < self.jobs_total


def abtest_results(*, test: ABTest) -> ABResults:
    """Win rate of A over B with its Wilson 95 % interval and two-sided binomial p, overall and per prompt; two
    aggregate queries whatever the number of votes."""
    counts = (
        ABVote.objects.filter(pair__test=test).values("pair__prompt_index", "choice").annotate(n=Count("id")).order_by()
    )
    tally: dict[int, dict[str, int]] = {}
    for row in counts:
        tally.setdefault(row["pair__prompt_index"], {})[row["choice"]] = row["n"]
    per_prompt = [
        WinRate(
            label=prompt,
            wins_a=tally.get(i, {}).get(ABChoice.A, 0),
            wins_b=tally.get(i, {}).get(ABChoice.B, 0),
            ties=tally.get(i, {}).get(ABChoice.TIE, 0),
        )
        for i, prompt in enumerate(test.prompts)
    ]
    overall = WinRate(
        label="All prompts",
        wins_a=sum(w.wins_a for w in per_prompt),
        wins_b=sum(w.wins_b for w in per_prompt),
        ties=sum(w.ties for w in per_prompt),
    )
    jobs = GenerationJob.objects.filter(Q(ab_pair_a__test=test) | Q(ab_pair_b__test=test)).aggregate(
        total=Count("id"), finished=Count("id", filter=Q(status__in=FINISHED))
    )
    voters = ABVote.objects.filter(pair__test=test).values("user").distinct().count()
    return ABResults(
        test=test,
        overall=overall,
        per_prompt=per_prompt,
        jobs_total=jobs["total"],
        jobs_finished=jobs["finished"],
        voters=voters,
    )


@dataclass(frozen=True)
class BlindPair:
    """One pair as one member sees it: outputs left and right in their own order, no names."""

    pair: ABPair
    left: GenerationJob | None
    right: GenerationJob | None
    left_urls: dict  # job_output_urls: output_url, poster_url (a video's still), …
    right_urls: dict
    my_side: str  # "left", "right", "tie" or "" (not voted)

    @property
    def ready(self) -> bool:
        return bool(self.left and self.right and self.left.status == self.right.status == JobStatus.SUCCEEDED)

    @property
    def prompt(self) -> str:
        return self.pair.test.prompts[self.pair.prompt_index]

    @property
    def left_url(self) -> str | None:
        return self.left_urls.get("output_url")

    @property
    def right_url(self) -> str | None:
        return self.right_urls.get("output_url")

    @property
    def sides(self) -> list[tuple[str, GenerationJob | None, dict]]:
        return [("left", self.left, self.left_urls), ("right", self.right, self.right_urls)]


def _urls(job: GenerationJob | None) -> dict:
    return job_output_urls(job=job) if job else {}


def a_is_left(*, pair_id: int, user_id: int) -> bool:
    """Whether A shows on the left for this member: random-looking (keyed by SECRET_KEY, so not guessable from
    ids) yet stable, so a member's page does not reshuffle on reload."""
    digest = hashlib.sha256(f"{settings.SECRET_KEY}:abtest:{pair_id}:{user_id}".encode()).digest()
    return digest[0] % 2 == 0


def abtest_blind_pairs(*, test: ABTest, user) -> list[BlindPair]:
    """Every pair of the test in the member's own left/right order, with their vote as they saw it."""
    pairs = list(ABPair.objects.filter(test=test).select_related("test", "job_a", "job_b"))
    votes = dict(ABVote.objects.filter(pair__test=test, user=user).values_list("pair_id", "choice"))
    blind = []
    for pair in pairs:
        a_left = a_is_left(pair_id=pair.id, user_id=user.id)
        left, right = (pair.job_a, pair.job_b) if a_left else (pair.job_b, pair.job_a)
        choice = votes.get(pair.id, "")
        if choice == ABChoice.TIE:
            side = "tie"
        elif choice:
            side = "left" if (choice == ABChoice.A) == a_left else "right"
        else:
            side = ""
        blind.append(
            BlindPair(
                pair=pair,
                left=left,
                right=right,
                left_urls=_urls(left),
                right_urls=_urls(right),
                my_side=side,
            )
        )
    return blind


# Tests looked through for the compare page: the workspace's most recent, enough to find those of a few versions.
COMPARE_RECENT_TESTS = 200


@dataclass(frozen=True)
class CompareABTest:
    test: ABTest
    lora_a: int
    lora_b: int
    overall: WinRate


def abtests_between(*, workspace: Workspace, lora_ids: list[int]) -> list[CompareABTest]:
    """The workspace's A/B tests whose two stacks are each one of `lora_ids` alone (the compare page's A/B
    results), newest first, with their overall win rate; three queries whatever the number of votes."""
    wanted = set(lora_ids)
    matches = []
    for test in ABTest.objects.filter(workspace=workspace).order_by("-created_at")[:COMPARE_RECENT_TESTS]:
        if len(test.stack_a) == len(test.stack_b) == 1:
            a, b = test.stack_a[0]["lora_id"], test.stack_b[0]["lora_id"]
            if a in wanted and b in wanted and a != b:
                matches.append((test, a, b))
    counts = (
        ABVote.objects.filter(pair__test__in=[test for test, _, _ in matches])
        .values("pair__test_id", "choice")
        .annotate(n=Count("id"))
        .order_by()
    )
    tally: dict[int, dict[str, int]] = {}
    for row in counts:
        tally.setdefault(row["pair__test_id"], {})[row["choice"]] = row["n"]
    return [
        CompareABTest(
            test=test,
            lora_a=a,
            lora_b=b,
            overall=WinRate(
                label=str(test),
                wins_a=tally.get(test.id, {}).get(ABChoice.A, 0),
                wins_b=tally.get(test.id, {}).get(ABChoice.B, 0),
                ties=tally.get(test.id, {}).get(ABChoice.TIE, 0),
            ),
        )
        for test, a, b in matches
    ]
