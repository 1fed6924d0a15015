"""Recycling an evicted adapter's LoRA modules as a slot for another LoRA of the same layout (the hotswap idea).

Loading a state dict through `load_lora_weights` injects new PEFT modules (a walk over the whole model, a config,
fresh parameters): ~50x the memory-copy floor of the LoRA's bytes on a 1.3B-width slice, where copying the tensors
into already-injected modules of the same shapes is ~1x. diffusers' own `hotswap=True` keeps the modules but still
runs the key conversion and config checks (~9x) and keeps the old adapter *name*, while this manager names adapters
by LoRA id. So a slot is recycled directly: its lora_A/lora_B weights are overwritten with `copy_` and the adapter
is renamed in every per-adapter container of its layers and in the component's `peft_config`.

Only plain LoRA Linear layers recycle (no DoRA, bias, rsLoRA or other variants), only when the state dict holds
exactly `<prefix>.<module>.lora_A/B.weight` for exactly the slot's modules with the slot's shapes, and only when the
slot was created with diffusers' default alpha (alpha = rank, what a state dict without alphas loads as). Anything
else returns None and the caller loads normally. The rename walks PEFT's per-adapter dicts generically (any dict or
ModuleDict of the layer keyed by the adapter name); tests compare recycled adapters bitwise with
freshly loaded ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer

from .host_tier import StateDict

_PAIR_SUFFIXES = {".lora_A.weight": 0, ".lora_B.weight": 1}

# module path -> (the LoRA layer, its new lora_A weight, its new lora_B weight)
SlotPlan = dict[str, tuple[LoraLinear, torch.Tensor, torch.Tensor]]


def slot_plan(
    layers: Mapping[str, BaseTunerLayer], slot: str, state_dict: StateDict, *, prefix: str
) -> SlotPlan | None:
    """How `state_dict` fits the modules adapter `slot` holds among a component's LoRA `layers` (by module path),
    or None if it does not fit exactly."""
    pairs: dict[str, list[torch.Tensor | None]] = {}
    for key, tensor in state_dict.items():
        if not key.startswith(prefix + "."):
            return None
        for suffix, index in _PAIR_SUFFIXES.items():
            if key.endswith(suffix):
                pairs.setdefault(key[len(prefix) + 1 : -len(suffix)], [None, None])[index] = tensor
                break
        else:
            return None
    holders = {path: layer for path, layer in layers.items() if slot in getattr(layer, "lora_A", {})}
    if not pairs or holders.keys() != pairs.keys():
        return None
    plan: SlotPlan = {}
    for path, (down, up) in pairs.items():
        layer = holders[path]
        if down is None or up is None or type(layer) is not LoraLinear or not _plain(layer, slot):
            return None
        if layer.lora_A[slot].weight.shape != down.shape or layer.lora_B[slot].weight.shape != up.shape:
            return None
        plan[path] = (layer, down, up)
    return plan


def recycle(component: torch.nn.Module, plan: SlotPlan, *, slot: str, name: str) -> None:
    """Copy the new weights into the slot's modules and rename adapter `slot` to `name` in `component`."""
    targets, sources = [], []
    for layer, down, up in plan.values():
        targets += [layer.lora_A[slot].weight, layer.lora_B[slot].weight]
        sources += [down, up]
    with torch.no_grad():
        # One batched copy rather than two dispatches per layer: torch's `_foreach` kernels (what its optimizers
        # use); tests/test_runtime_fused.py compares a recycled adapter bitwise with a freshly loaded one.
        torch._foreach_copy_(targets, sources, non_blocking=True)
    containers = None
    for layer, _, _ in plan.values():
        containers = containers or _adapter_containers(layer, slot)
        _rename(layer, containers, slot, name)
    component.peft_config[name] = component.peft_config.pop(slot)


def _plain(layer: LoraLinear, slot: str) -> bool:
    return (
        layer.lora_alpha[slot] == layer.r[slot]
        and not layer.use_rslora.get(slot, False)
        and not layer.lora_bias.get(slot, False)
        and slot not in layer.lora_variant
        and slot not in layer.lora_magnitude_vector
    )


def _adapter_containers(layer: LoraLinear, slot: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of the layer's per-adapter dicts and ModuleDicts that hold `slot`; every plain LoRA Linear layer
    of one adapter has the same ones, so they are found once per recycle instead of once per layer."""
    dicts = tuple(key for key, value in vars(layer).items() if isinstance(value, dict) and slot in value)
    modules = tuple(
        key for key, module in layer._modules.items() if isinstance(module, torch.nn.ModuleDict) and slot in module
    )
    return dicts, modules


def _rename(layer: LoraLinear, containers: tuple[tuple[str, ...], tuple[str, ...]], old: str, new: str) -> None:
    dicts, modules = containers
    attributes = vars(layer)
    for key in dicts:
        attributes[key][new] = attributes[key].pop(old)
    for key in modules:
        # A ModuleDict keeps its entries in `_modules`; moving the entry there is what pop + setitem do, minus
        # nn.Module's attribute bookkeeping per call.
        entries = layer._modules[key]._modules
        entries[new] = entries.pop(old)
    if isinstance(layer._active_adapter, list):
        layer._active_adapter = [new if active == old else active for active in layer._active_adapter]
    elif layer._active_adapter == old:
        layer._active_adapter = new
