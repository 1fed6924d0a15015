"""LoRA adapters on long-lived pipelines: applying a job's adapters (`manager`), merging them into the base weights
and restoring those exactly (`fusing`), keeping converted LoRAs in host RAM (`host_tier`), and reusing an evicted
adapter's modules for a LoRA of the same layout (`slots`)."""

from .manager import (
    APPLY_MODES,
    EXPERT_CHOICES,
    RESIDENCY_MODES,
    AdapterManager,
    AdapterSpec,
    ApplyStats,
    LoRAChecksumError,
    LoRALoadError,
    adapter_name,
    lora_components,
)

__all__ = [
    "APPLY_MODES",
    "EXPERT_CHOICES",
    "RESIDENCY_MODES",
    "AdapterManager",
    "AdapterSpec",
    "ApplyStats",
    "LoRAChecksumError",
    "LoRALoadError",
    "adapter_name",
    "lora_components",
]
