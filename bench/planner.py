"""Planner: which placement each shipped base model gets on a 24/48/80/141 GB device, and its estimated peak.

Pure arithmetic over the registry (generation/runtime/memory_plan.py): no torch, no GPU, milliseconds. The figures
are the planner's estimates, not measurements; its activation constants are not yet calibrated on a GPU.
"""

from __future__ import annotations

import os

from bench.report import Section

DEVICES_GB = (24, 48, 80, 141)  # advertised sizes, counted as GB of 10^9 bytes (what the cards report is a bit more)


def run() -> Section:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lorasite.settings")
    django.setup()
    from generation.model_registry import model_registry
    from generation.runtime.memory_plan import GiB, PlacementError, component_sizes, plan

    rows = []
    for model in (m for m in model_registry().values() if not m.demo):
        sizes = component_sizes(model)
        weights = sum(size.nbytes for size in sizes)
        row: list[object] = [model.key, f"{weights / GiB:.1f}", sizes[0].source]
        for gb in DEVICES_GB:
            try:
                chosen = plan(model, gb * 10**9)
                row.append(f"{chosen.placement} {chosen.peak_bytes / GiB:.1f}")
            except PlacementError:
                row.append("does not fit")
        rows.append(row)
    return Section(
        title="Placement per shipped model and device size (estimates)",
        method=(
            "`generation.runtime.memory_plan.plan(model, device_bytes)` for every non-demo registry entry at "
            "24, 48, 80 and 141 GB (10^9 bytes). Component bytes come from the safetensors headers when the weights "
            "are on disk, else from the parameter counts declared in the registry (column `sizes`), at the dtype "
            "they run in (bf16; the Wan VAE fp32). Each cell: the fastest placement whose estimated peak fits "
            "(gpu > model_offload > group_offload > sequential) and that peak in GiB, for the model's largest "
            "resolution and frame count. The activation reserve formula is in the module docstring; it is not yet "
            "calibrated on a GPU, so these are estimates, not measurements."
        ),
        header=["model", "weights GiB", "sizes", *(f"{gb} GB" for gb in DEVICES_GB)],
        rows=rows,
        verdict="informational: the placement each device size gets",
    )
