"""Reads for sweeps and A/B tests: the grid of a sweep with its cells' state and thumbnails, axis labels."""

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from generation.models import FINISHED, GenerationJob, JobStatus, Sweep, SweepAxisKind, SweepCell
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
