"""Version timelines: the LoRAs of one name, oldest first, each with its training headline and its own metrics.

`lora_version_groups` answers `GET …/loras/?group_by_name=true` (a page of names, each name's versions) and
`lora_version_timeline` the LoRA page's Versions part. Three queries whatever the number of versions: the rows,
then the metrics of all of them at once (loras.metrics.lora_usage)."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from loras import selectors
from loras.metrics import UsageFigures, lora_usage
from loras.models import LoRA
from loras.training import training_headline
from workspaces.models import Workspace


@dataclass(frozen=True)
class VersionRow:
    lora: LoRA
    training: dict[str, Any]  # training_headline: epochs, steps, learning_rate, dataset_size, text
    metrics: UsageFigures


@dataclass(frozen=True)
class VersionGroup:
    name: str
    versions: list[VersionRow]


def _rows(loras: list[LoRA]) -> list[VersionRow]:
    usage = lora_usage(lora_ids=[lora.id for lora in loras])
    return [
        VersionRow(
            lora=lora,
            training=training_headline(training_metadata=lora.training_metadata, training=lora.training),
            metrics=usage[lora.id],
        )
        for lora in loras
    ]


def lora_group_names(*, workspace: Workspace, filters: Mapping[str, str] | None = None) -> QuerySet:
    """The names of the workspace's LoRAs that pass `filters` (LoRAFilterSet), alphabetically, once each."""
    return (
        selectors.lora_list(workspace=workspace, filters=filters)
        .order_by("name")
        .values_list("name", flat=True)
        .distinct()
    )


def lora_version_groups(
    *, workspace: Workspace, names: list[str], filters: Mapping[str, str] | None = None
) -> list[VersionGroup]:
    """One group per name in `names` (in that order), its versions that pass `filters` in order of creation."""
    loras = list(
        selectors.lora_list(workspace=workspace, filters=filters).filter(name__in=names).order_by("created_at", "id")
    )
    rows = _rows(loras)
    return [VersionGroup(name=name, versions=[row for row in rows if row.lora.name == name]) for name in names]


def lora_version_timeline(*, lora: LoRA) -> list[VersionRow]:
    """All alive versions of the LoRA's name, oldest first (the LoRA page)."""
    return _rows(list(selectors.lora_versions(workspace=lora.workspace, name=lora.name)))
