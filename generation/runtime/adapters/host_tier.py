"""Converted LoRA state dicts kept in host RAM, so a LoRA evicted from the device comes back without its file.

Reading a LoRA means parsing the safetensors file and converting its keys (kohya, musubi, ComfyUI, ai-toolkit
layouts) to the diffusers layout. The tier keeps the result, least recently used first, bounded in bytes; on CUDA
its tensors are pinned, so loading them onto the device is a DMA rather than a pageable copy.

Entries are keyed by file path: the worker's LoRA cache names files by their SHA-256, so a path never changes
content.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def state_dict_nbytes(state_dict: StateDict) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in state_dict.values())


class HostTier:
    """A byte-bounded LRU of converted LoRA state dicts in host memory; `max_bytes=0` keeps nothing."""

    def __init__(self, *, max_bytes: int, pin_memory: bool) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = max_bytes
        self._pin_memory = pin_memory
        self._entries: OrderedDict[Path, StateDict] = OrderedDict()
        self._nbytes: dict[Path, int] = {}

    @property
    def nbytes(self) -> int:
        return sum(self._nbytes.values())

    @property
    def paths(self) -> list[Path]:
        return list(self._entries)

    def get(self, path: Path) -> StateDict | None:
        state_dict = self._entries.get(path)
        if state_dict is not None:
            self._entries.move_to_end(path)
        return state_dict

    def put(self, path: Path, state_dict: StateDict) -> StateDict:
        """Keep `state_dict` if it fits (evicting the least recently used); returns the tensors to load from."""
        nbytes = state_dict_nbytes(state_dict)
        if nbytes > self.max_bytes:
            return state_dict
        if self._pin_memory:
            state_dict = {key: tensor.pin_memory() for key, tensor in state_dict.items()}
        self.discard(path)
        while self._entries and self.nbytes + nbytes > self.max_bytes:
            evicted, _ = self._entries.popitem(last=False)
            del self._nbytes[evicted]
            logger.info("Host tier: dropped %s", evicted)
        self._entries[path] = state_dict
        self._nbytes[path] = nbytes
        return state_dict

    def discard(self, path: Path) -> None:
        self._entries.pop(path, None)
        self._nbytes.pop(path, None)
