"""Writes for strength sweeps and XY grids (models Sweep, SweepCell).

A sweep is one prompt and seed, a LoRA stack and one or two axes. Each cell is an ordinary job queued through
`generation.services.generation_create`, all in one transaction: a problem in any cell (a weight out of range,
steps the model does not allow, a LoRA not ready) refuses the whole sweep with nothing queued. The size is bounded
by LORASITE_SWEEP_MAX_CELLS and a dry run answers the cost (the number of jobs) without queueing anything. With the
job queue down the sweep is refused whole, nothing saved (generation/experiments/delivery.py)."""

import random
from dataclasses import dataclass
from io import BytesIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation import services as job_services
from generation.experiments import delivery
from generation.experiments.contact_sheet import contact_sheet_png
from generation.experiments.selectors import sweep_grid
from generation.models import GenerationJob, Sweep, SweepAxisKind, SweepCell
from generation.scaleout import loras_prefetch
from generation.services import SEED_MAX, LoRARequest
from generation.thumbnails import THUMB_MAX_SIDE
from loras.models import LoRA
from lorasite.errors import Conflict, InvalidInput
from lorasite.object_store import get_object_store
from workspaces.models import Membership, Role
from workspaces.services import require_role

# 0, 0.25 … 1.5: where most LoRAs go from no effect to overcooked.
DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
LORA_AXES = (SweepAxisKind.WEIGHT, SweepAxisKind.WEIGHT_LOW, SweepAxisKind.VERSION)


@dataclass(frozen=True)
class Axis:
    kind: str
    values: tuple
    lora_id: int | None = None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "lora_id": self.lora_id, "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Axis | None":
        if not data:
            return None
        return cls(kind=data["kind"], values=tuple(data["values"]), lora_id=data.get("lora_id"))


def _check_axis(axis: Axis, *, field: str, stack_ids: set[int], errors: dict[str, list[str]]) -> None:
    if axis.kind not in SweepAxisKind.values:
        errors.setdefault(f"{field}.kind", []).append(f"'{axis.kind}' is not an axis ({', '.join(SweepAxisKind)})")
        return
    if not axis.values:
        errors.setdefault(f"{field}.values", []).append("An axis needs at least one value")
    if len(set(axis.values)) != len(axis.values):
        errors.setdefault(f"{field}.values", []).append("An axis lists each value once")
    if axis.kind in LORA_AXES and axis.lora_id is None:
        errors.setdefault(f"{field}.lora_id", []).append(f"A {SweepAxisKind(axis.kind).label} axis names its LoRA")
    if axis.kind in (SweepAxisKind.WEIGHT_LOW, SweepAxisKind.VERSION) and axis.lora_id not in stack_ids:
        errors.setdefault(f"{field}.lora_id", []).append("This axis varies a LoRA of the stack: add it to loras")
    whole = all(type(value) is int for value in axis.values)
    if axis.kind == SweepAxisKind.STEPS and not whole:
        errors.setdefault(f"{field}.values", []).append("Steps are whole numbers")
    if axis.kind == SweepAxisKind.VERSION and not whole:
        errors.setdefault(f"{field}.values", []).append("A version axis lists LoRA ids")


def sweep_check(*, loras: list[LoRARequest], x_axis: Axis, y_axis: Axis | None) -> int:
    """The number of cells (the jobs the sweep queues), or InvalidInput naming every problem of the axes."""
    errors: dict[str, list[str]] = {}
    stack_ids = {entry.lora_id for entry in loras}
    _check_axis(x_axis, field="x_axis", stack_ids=stack_ids, errors=errors)
    if y_axis is not None:
        _check_axis(y_axis, field="y_axis", stack_ids=stack_ids, errors=errors)
        if (y_axis.kind, y_axis.lora_id) == (x_axis.kind, x_axis.lora_id):
            errors.setdefault("y_axis.kind", []).append("The two axes vary the same thing")
    cells = len(x_axis.values) * (len(y_axis.values) if y_axis else 1)
    limit = settings.LORASITE_SWEEP_MAX_CELLS
    if cells > limit:
        errors.setdefault("x_axis.values", []).append(f"At most {limit} cells per sweep; this one has {cells}")
    if errors:
        messages = [m for ms in errors.values() for m in ms]
        raise InvalidInput(
            messages[0] if len(messages) == 1 else f"{len(messages)} problems: " + "; ".join(messages), errors=errors
        )
    return cells


def _apply(axis: Axis, value, stack: list[dict], params: dict) -> None:
    """Change one cell's inputs for its value on `axis`. `slot` is the LoRA's id in the sweep's own stack, which
    stays the same when a version axis swaps the LoRA for another version."""
    if axis.kind == SweepAxisKind.STEPS:
        params["steps"] = value
        return
    if axis.kind == SweepAxisKind.GUIDANCE:
        params["guidance"] = value
        return
    entry = next((e for e in stack if e["slot"] == axis.lora_id), None)
    if entry is None:  # a weight axis may name a LoRA the stack does not have yet
        entry = {"slot": axis.lora_id, "lora_id": axis.lora_id, "weight": None, "expert": None, "weight_low": None}
        stack.append(entry)
    if axis.kind == SweepAxisKind.WEIGHT:
        entry["weight"] = value
    elif axis.kind == SweepAxisKind.WEIGHT_LOW:
        entry["expert"], entry["weight_low"] = "both", value
    else:
        entry["lora_id"] = value


def cell_inputs(*, sweep: Sweep, x: int, y: int) -> tuple[list[LoRARequest], dict]:
    """The LoRAs and params of cell (x, y)."""
    stack = [{"slot": e["lora_id"], **e} for e in sweep.loras]
    params = dict(sweep.params)
    x_axis, y_axis = Axis.from_dict(sweep.x_axis), Axis.from_dict(sweep.y_axis)
    _apply(x_axis, x_axis.values[x], stack, params)
    if y_axis is not None:
        _apply(y_axis, y_axis.values[y], stack, params)
    requests = [
        LoRARequest(lora_id=e["lora_id"], weight=e["weight"], expert=e["expert"], weight_low=e["weight_low"])
        for e in stack
    ]
    return requests, params


def _cell_problem(error: InvalidInput, *, sweep: Sweep, x: int, y: int) -> InvalidInput:
    where = f"x = {sweep.x_axis['values'][x]}" + (f", y = {sweep.y_axis['values'][y]}" if sweep.y_axis else "")
    errors = {f"cells.{y}.{x}.{key}": messages for key, messages in error.errors.items()}
    return InvalidInput(f"Cell {where}: {error.message}", errors=errors)


def sweep_create(
    *,
    actor: Membership,
    model: str,
    prompt: str,
    negative_prompt: str = "",
    params: dict | None = None,
    loras: list[LoRARequest] | None = None,
    x_axis: Axis,
    y_axis: Axis | None = None,
    name: str = "",
    dry_run: bool = False,
) -> tuple[Sweep, int]:
    """The sweep and its cell count. Every cell is validated as the job it becomes; with `dry_run` nothing stays
    (the same checks, then a rollback), so the cost shown before starting is the one a real start has."""
    require_role(membership=actor, minimum=Role.MEMBER, action="run sweeps")
    loras = list(loras or [])
    cells = sweep_check(loras=loras, x_axis=x_axis, y_axis=y_axis)
    params = dict(params or {})
    params.setdefault("seed", random.randint(0, SEED_MAX))  # one seed for every cell: only the axes differ
    with transaction.atomic():
        sweep = Sweep(
            workspace=actor.workspace,
            created_by=actor.user,
            name=name,
            model_key=model,
            prompt=prompt,
            negative_prompt=negative_prompt,
            params=params,
            loras=[
                {"lora_id": e.lora_id, "weight": e.weight, "expert": e.expert, "weight_low": e.weight_low}
                for e in loras
            ],
            x_axis=x_axis.as_dict(),
            y_axis=y_axis.as_dict() if y_axis else None,
        )
        sweep.full_clean()
        sweep.save()
        job_ids = []
        for y in range(len(y_axis.values) if y_axis else 1):
            for x in range(len(x_axis.values)):
                requests, cell_params = cell_inputs(sweep=sweep, x=x, y=y)
                try:
                    # Queued after this block commits (send_after_commit): a later cell's problem sends nothing.
                    job = job_services.generation_create(
                        actor=actor,
                        model=model,
                        prompt=prompt,
                        negative_prompt=negative_prompt,
                        params=cell_params,
                        loras=requests,
                    )
                except InvalidInput as error:
                    raise _cell_problem(error, sweep=sweep, x=x, y=y) from None
                cell = SweepCell(sweep=sweep, job=job, x=x, y=y)
                cell.full_clean()
                cell.save()
                job_ids.append(job.id)
        if dry_run:
            transaction.set_rollback(True)
            return sweep, cells
        delivery.broker_require(what="sweep")
        # Queueing a sweep prefetches its LoRAs (every version a version axis names too) on their workers.
        versions = {v for axis in (x_axis, y_axis) if axis and axis.kind == SweepAxisKind.VERSION for v in axis.values}
        loras_prefetch(
            loras=LoRA.objects.filter(workspace=actor.workspace, id__in={e.lora_id for e in loras} | versions)
        )
    delivery.jobs_sent_require(job_ids=job_ids, what="sweep", sweep_id=sweep.id)
    return sweep, cells


@transaction.atomic
def sweep_cancel(*, actor: Membership, sweep: Sweep) -> int:
    """Cancel every cell still queued or running (running ones stop between two steps); the number cancelled.
    The sweep's creator or an admin; 409 when nothing is left to cancel."""
    if sweep.created_by_id != actor.user_id:
        require_role(membership=actor, minimum=Role.ADMIN, action="cancel someone else's sweep")
    sweep = Sweep.objects.select_for_update().get(id=sweep.id)
    jobs = [job for job in GenerationJob.objects.filter(sweep_cell__sweep=sweep) if not job.is_finished]
    if not jobs:
        raise Conflict("Every cell of this sweep has already finished.")
    for job in jobs:
        job_services.generation_cancel(actor=actor, job=job)
    sweep.cancelled_at = timezone.now()
    sweep.save(update_fields=["cancelled_at"])
    return len(jobs)


def _tile(key: str):
    from PIL import Image

    with get_object_store().open_stream(key) as stream:
        image = Image.open(BytesIO(stream.read()))
        image.load()
    if max(image.size) > THUMB_MAX_SIDE:
        image.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE))
    return image


def _still_key(job: GenerationJob) -> str:
    """The image a tile is made from: the thumbnail, else the poster, else (an image job) the output itself."""
    return job.thumb_key or job.poster_key or (job.output_key if job.kind == "image" else "")


def sweep_contact_sheet(*, sweep: Sweep) -> str:
    """The key of the sweep's contact sheet PNG, made once all its cells have finished (409 before) and stored
    beside the outputs. Each tile is the cell's thumbnail (for video, made from its poster)."""
    if sweep.sheet_key:
        return sweep.sheet_key
    grid = sweep_grid(sweep=sweep, with_urls=False)
    if grid.live:
        raise Conflict(f"The sweep is still running ({grid.finished} of {grid.total} cells finished).")
    if not grid.succeeded:
        raise Conflict("No cell of this sweep succeeded: there is nothing to put on a contact sheet.")
    tiles = [
        [_tile(key) if cell.status == "succeeded" and (key := _still_key(cell.job)) else None for cell in row.cells]
        for row in grid.rows
    ]
    png = contact_sheet_png(
        tiles=tiles, x_labels=grid.x_labels, y_labels=grid.y_labels, x_title=grid.x_title, y_title=grid.y_title
    )
    key = f"workspaces/{sweep.workspace_id}/outputs/sweeps/{sweep.id}/contact-sheet.png"
    get_object_store().save_stream(key, BytesIO(png))
    with transaction.atomic():
        Sweep.objects.filter(id=sweep.id).update(sheet_key=key)
    sweep.sheet_key = key
    return key
