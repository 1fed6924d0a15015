"""Fused LoRA application: a job's adapters merged into the base weights, and the pristine weights copied back.

Unfused, every PEFT LoRA layer adds `lora_B(lora_A(x)) * scale` per active adapter at every denoising step
(1.13x base per step with one rank-32 LoRA, 1.61x with five, bench/adapters.py). Merged, the layer computes its
base layer alone (≈ 1.00x), at the cost of one delta `B @ A * scale` per layer and adapter per job.

Restoring never subtracts the deltas (PEFT's `unmerge()` does, which drifts in bf16): the base layer's parameters
are copied to host memory (pinned on CUDA, so the copy back is a DMA) the first time a layer is merged, and copied
back with `copy_`. The pristine copy is kept for the life of the pipeline, since the base weights never change
otherwise: later jobs pay only the host-to-device copy, never another device-to-host copy or pinned allocation.
Host memory grows to the base weights of every layer any LoRA ever touched (`backup_bytes`), up to
`max_backup_bytes`: the manager checks `extra_backup_bytes` before merging and applies a job unfused rather than
go past it (an A14B pair's fully touched transformers would pin ~54 GB). Where pinned memory cannot be had, the
backup falls back to pageable memory (a slower copy back, same bits).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

logger = logging.getLogger(__name__)

# An identical key on the next job means its merged weights can stay as they are: (adapter, file, weight,
# low-noise weight or None, expert) per adapter.
MergeKey = tuple[tuple[str, str, float, float | None, str], ...]


class FusedWeights:
    """The merged state of one pipeline's LoRA layers: which layers hold merged deltas, and their pristine weights."""

    def __init__(self, *, pin_memory: bool, max_backup_bytes: int) -> None:
        if max_backup_bytes < 0:
            raise ValueError(f"max_backup_bytes must be >= 0, not {max_backup_bytes}")
        self._pin_memory = pin_memory
        self.max_backup_bytes = max_backup_bytes
        # id(base layer) -> (the base layer, its parameters as they were before any merge), on the host.
        self._pristine: dict[int, tuple[torch.nn.Module, dict[str, torch.Tensor]]] = {}
        self._merged_layers: list[BaseTunerLayer] = []
        self.key: MergeKey | None = None
        self.names: tuple[str, ...] = ()

    @property
    def merged(self) -> bool:
        return bool(self._merged_layers)

    @property
    def backup_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, params in self._pristine.values() for t in params.values())

    def extra_backup_bytes(self, layers: list[BaseTunerLayer], names: Collection[str]) -> int:
        """Host bytes that merging the adapters `names` into `layers` would add to the backup."""
        bases = {
            id(base): base
            for layer in layers
            if any(name in layer.lora_A for name in names) and id(base := layer.get_base_layer()) not in self._pristine
        }
        return sum(p.numel() * p.element_size() for base in bases.values() for p in base.parameters(recurse=False))

    def merge(self, layers: list[BaseTunerLayer], names: Collection[str], key: MergeKey) -> int:
        """Merge the adapters `names` into every layer holding any of them, each with the scale already set on that
        layer (so one adapter can merge with another scale per component: a Wan 2.2 LoRA's weight per expert).

        Adapters merge in name order, so the same set gives bitwise the same weights whatever order a job lists it
        in. Returns how many layers were merged. On failure the layers merged so far stay recorded: `restore()`.
        """
        if self.merged:
            raise RuntimeError("merge() while a previous merge is in place; restore() first")
        for layer in layers:
            present = sorted(name for name in names if name in layer.lora_A)
            if not present:
                continue
            self._back_up(layer.get_base_layer())
            # Recorded before merging, so that a merge failing halfway through this layer is still copied back.
            self._merged_layers.append(layer)
            layer.merge(adapter_names=present)
        self.key, self.names = key, tuple(sorted(names))
        return len(self._merged_layers)

    def restore(self) -> None:
        """Copy the pristine base weights back into every merged layer and mark it unmerged (bitwise the base)."""
        while self._merged_layers:
            layer = self._merged_layers[-1]
            base = layer.get_base_layer()
            _, pristine = self._pristine[id(base)]
            with torch.no_grad():
                for name, parameter in base.named_parameters(recurse=False):
                    parameter.copy_(pristine[name])
            # PEFT's record of what is merged (read by its `merged` property and its forward); the weights are
            # already the base's, so PEFT's own `unmerge()` (which subtracts) must not run.
            layer.merged_adapters = []
            self._merged_layers.pop()
        self.key, self.names = None, ()

    def _back_up(self, base: torch.nn.Module) -> None:
        if id(base) in self._pristine:
            return
        copies = {}
        for name, parameter in base.named_parameters(recurse=False):
            host = self._host_buffer(parameter)
            host.copy_(parameter.detach())
            copies[name] = host
        self._pristine[id(base)] = (base, copies)

    def _host_buffer(self, parameter: torch.Tensor) -> torch.Tensor:
        if self._pin_memory:
            try:
                return torch.empty(parameter.shape, dtype=parameter.dtype, device="cpu", pin_memory=True)
            except RuntimeError as error:  # torch reports a failed cudaHostAlloc as a RuntimeError (CUDA OOM)
                self._pin_memory = False
                logger.warning(
                    "Pinning host memory for the fused-LoRA backup failed (%s); using pageable memory",
                    " ".join(str(error).split())[:200],
                )
        return torch.empty(parameter.shape, dtype=parameter.dtype, device="cpu")
