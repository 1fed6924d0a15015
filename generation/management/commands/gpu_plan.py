"""python manage.py gpu_plan [--memory-bytes N] [model ...]: each model's memory plan on this machine's device."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from generation.model_registry import model_registry
from generation.runtime.memory_plan import MemoryPlanError, plan


class Command(BaseCommand):
    help = (
        "Print, per model: the bytes of each component, its dtype, the device memory, the chosen placement and the "
        "estimated peak (what a GPU worker logs at start)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("models", nargs="*", help="model keys (default: every enabled model)")
        parser.add_argument(
            "--memory-bytes",
            type=int,
            default=None,
            help="plan for a device of this many bytes (default: LORASITE_GPU_MEMORY_BYTES, else this machine's GPU)",
        )

    def handle(self, *args, models: list[str], memory_bytes: int | None, **options) -> None:
        registry = model_registry()
        unknown = [key for key in models if key not in registry]
        if unknown:
            raise CommandError(f"Unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(registry))}")
        if memory_bytes is not None and memory_bytes <= 0:
            raise CommandError("--memory-bytes must be a positive number of bytes.")
        device_bytes = memory_bytes or settings.LORASITE_GPU_MEMORY_BYTES or _cuda_total_bytes()
        selected = [registry[key] for key in models] or [model for model in registry.values() if model.enabled]
        for model in selected:
            try:
                lines = plan(model, device_bytes).describe()
            except MemoryPlanError as error:
                lines = [f"{model.key}: {error}"]
            self.stdout.write("\n".join(lines))


def _cuda_total_bytes() -> int | None:
    from generation.runtime.pipelines import device_memory_bytes  # torch: only when no size was given

    return device_memory_bytes()
