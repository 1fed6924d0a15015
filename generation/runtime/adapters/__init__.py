"""LoRA adapters on long-lived pipelines: applying a job's adapters (`manager`), merging them into the base weights
and restoring those exactly (`fusing`), and keeping converted LoRAs in host RAM (`host_tier`)."""

from .manager import (
    APPLY_MODES,
    EXPERT_CHOICES,
    RESIDENCY_MODES,
    AdapterManager,
    AdapterSpec,
    ApplyStats,
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
    "LoRALoadError",
    "adapter_name",
    "lora_components",
]
