"""LoRA layers on a transformer stored in float8 (`storage_dtype: fp8`, see pipelines): kept in the compute dtype.

PEFT creates a new adapter's tensors in its base layer's dtype, so on a float8-stored layer lora_A and lora_B are
float8: their values rounded to 3 mantissa bits on load, and their matmul has no float8 kernel on the CPU (and
loses precision on a GPU). Layerwise casting hooks only the layers present when it was enabled (and skips "lora"
anyway), so nothing upcasts them at compute time. After each load, every float8 tensor of the new adapter is
converted to the compute dtype and its values copied again from the converted state dict the load used, so the
layer holds the file's values, not float8-rounded ones. Such layers are never merged into (the manager applies
LoRAs unfused on fp8 models): a merged delta would be rounded to float8 with the base weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from ..pipelines import FP8_STORAGE_DTYPE
from .host_tier import StateDict


def to_compute_dtype(
    layers: Mapping[str, BaseTunerLayer], name: str, state_dict: StateDict, *, prefix: str, dtype: torch.dtype
) -> tuple[int, int]:
    """Convert adapter `name`'s float8 tensors in `layers` (module path -> LoRA layer) to `dtype`.

    Each converted tensor takes its value from `state_dict[f"{prefix}.{path}.{container}.{param}"]` (diffusers'
    layout, e.g. "transformer.blocks.0.attn1.to_q.lora_A.weight") where that key has the tensor's shape; others
    (tensors diffusers adds itself, such as the zeros of a T2V LoRA expanded for I2V) keep their float8 value,
    upcast. Returns (tensors converted, of which without a source in `state_dict`).
    """
    converted = unsourced = 0
    with torch.no_grad():
        for path, layer in layers.items():
            for container_name in layer.adapter_layer_names:
                container = getattr(layer, container_name, None)
                if container is None or name not in container:
                    continue
                item = container[name]
                # ModuleDicts (lora_A, lora_B, DoRA magnitudes) hold modules; ParameterDicts (embedding LoRAs) tensors.
                named = item.named_parameters() if isinstance(item, torch.nn.Module) else [("", item)]
                for param_name, parameter in named:
                    if parameter.dtype != FP8_STORAGE_DTYPE:
                        continue
                    source = state_dict.get(".".join(filter(None, (prefix, path, container_name, param_name))))
                    # `.data =` keeps the Parameter object, which optimizers' and offload hooks' references name.
                    if source is not None and source.shape == parameter.shape:
                        parameter.data = source.to(device=parameter.device, dtype=dtype, copy=True)
                    else:
                        parameter.data = parameter.data.to(dtype)
                        unsourced += 1
                    converted += 1
    return converted, unsourced
