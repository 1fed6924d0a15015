import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinLengthValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from workspaces.models import Workspace


class Status(models.TextChoices):
    PROCESSING = "processing", "Processing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class Expert(models.TextChoices):
    HIGH = "high", "High noise"
    LOW = "low", "Low noise"
    BOTH = "both", "Both"


class PreviewKind(models.TextChoices):
    IMAGE = "image", "Image"
    VIDEO = "video", "Video"


class LoRAQuerySet(models.QuerySet):
    def alive(self) -> "LoRAQuerySet":
        return self.filter(deleted_at__isnull=True)


class LoRA(models.Model):
    """One LoRA file in a workspace. The GPU worker loads it as adapter `lora_{id}`."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="loras")
    name = models.CharField(max_length=100, validators=[MinLengthValidator(1)])
    version = models.CharField(max_length=40, default="1")
    original_filename = models.CharField(max_length=255, help_text="As the user named it; display only.")
    file = models.FileField(max_length=500, blank=True, help_text="workspaces/{id}/loras/{uuid}/{sanitized name}")
    file_size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    # Computed in the same read as sha256, never taken from the file's metadata (loras/hashes.py).
    autov2 = models.CharField(max_length=10, blank=True, help_text="First 10 hex of the sha256 (Civitai, A1111).")
    autov3 = models.CharField(
        max_length=64, blank=True, help_text="sha256 of the tensor data after the header: metadata edits keep it."
    )
    blake3 = models.CharField(max_length=64, blank=True, help_text="BLAKE3 of the whole file.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PROCESSING)
    error = models.TextField(blank=True)
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the broker accepted the lora_ingest message; empty until it has."
    )
    base_model = models.CharField(max_length=32, default="unknown", help_text="Detected model family.")
    expert = models.CharField(max_length=4, choices=Expert.choices, default=Expert.BOTH)
    rank = models.PositiveIntegerField(null=True, blank=True)
    alpha = models.FloatField(null=True, blank=True)
    key_format = models.CharField(max_length=20, blank=True)
    tensor_count = models.PositiveIntegerField(default=0)
    dtype = models.CharField(max_length=12, blank=True)
    header_metadata = models.JSONField(default=dict, blank=True, help_text="The file's safetensors __metadata__.")
    training_metadata = models.JSONField(default=dict, blank=True, help_text="Readable kohya ss_* training fields.")
    training = models.JSONField(
        default=dict,
        blank=True,
        help_text="Members give it (loras/training.py): dataset, link, base model version, hyperparameters.",
    )
    module_shapes = models.JSONField(
        default=dict,
        blank=True,
        help_text="Component → {module → [in, out] features}, in diffusers' names after its own key conversion.",
    )
    coverage = models.JSONField(
        default=dict,
        blank=True,
        help_text="What diffusers makes of the file's tensors (generation/runtime/lora_keys.lora_coverage); "
        "empty until the ingest task ran, or for families diffusers has no loader for.",
    )
    trigger_words = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    description = models.TextField(blank=True, max_length=5000)
    preferred_weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    is_active = models.BooleanField(default=True)
    # Proposed at ingest from the file's name and metadata (loras/recommended.py), then the user's to edit.
    recommended_settings = models.JSONField(
        default=dict, blank=True, help_text="Any of steps, guidance, guidance_2, shift; optionally the model they suit."
    )
    is_distill = models.BooleanField(default=False, help_text="A step-distilled LoRA (lightx2v, Lightning, CausVid…).")
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    purged_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    use_count = models.PositiveIntegerField(default=0)
    # The card's preview (loras/previews.py): an uploaded image or video, or a copy of a job's output; the
    # thumbnail is what grids load. Empty: the card falls back to the last succeeded job's thumbnail.
    preview_key = models.CharField(max_length=500, blank=True, help_text="workspaces/<id>/previews/<lora id>/…")
    preview_thumb_key = models.CharField(max_length=500, blank=True, help_text="WebP, ≤ 320 px on the long side.")
    preview_kind = models.CharField(max_length=5, choices=PreviewKind.choices, blank=True)
    preview_job = models.ForeignKey(
        "generation.GenerationJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The job whose output the preview was copied from; empty for an upload.",
    )

    objects = LoRAQuerySet.as_manager()

    class Meta:
        verbose_name = "LoRA"
        ordering = ["-created_at", "-id"]
        constraints = [
            # Failed and deleted LoRAs do not hold on to their name and version.
            models.UniqueConstraint(
                fields=["workspace", "name", "version"],
                condition=Q(deleted_at__isnull=True) & ~Q(status="failed"),
                name="lora_name_version_unique_alive",
            ),
            models.UniqueConstraint(
                fields=["workspace", "sha256"],
                condition=Q(deleted_at__isnull=True) & ~Q(sha256="") & ~Q(status="failed"),
                name="lora_sha256_unique_alive",
            ),
            models.CheckConstraint(
                condition=Q(preferred_weight__gte=0.0) & Q(preferred_weight__lte=2.0),
                name="lora_preferred_weight_range",
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "deleted_at", "status"]),
            # Look-ups by hash are always within one workspace (search, dedupe, "same weights").
            models.Index(fields=["workspace", "autov2"], name="lora_workspace_autov2"),
            models.Index(fields=["workspace", "autov3"], name="lora_workspace_autov3"),
            models.Index(fields=["workspace", "blake3"], name="lora_workspace_blake3"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def adapter_name(self) -> str:
        return f"lora_{self.id}"

    @property
    def pair(self) -> "LoRAPair | None":
        """The pair this LoRA is a half of, or None (`selectors.LORA_RELATED` loads it with the row)."""
        for related in ("pair_as_high", "pair_as_low"):
            try:
                return getattr(self, related)
            except LoRAPair.DoesNotExist:
                continue
        return None

    @property
    def flat_module_shapes(self) -> dict[str, list[int]]:
        """`module_shapes` as one {"component.module": [in, out]} dict, for callers that only count or sum."""
        return {
            f"{component}.{module}": shape
            for component, modules in self.module_shapes.items()
            for module, shape in modules.items()
        }

    @property
    def coverage_text(self) -> str:
        """ "300 of 300 tensors map to transformer layers; 2 ignored (dora_scale)", or "" before the ingest task."""
        return coverage_text(self.coverage)


def coverage_text(coverage: dict) -> str:
    if not coverage:
        return ""
    components = " and ".join(sorted(coverage.get("components") or {})) or "no"
    text = f"{coverage['mapped']} of {coverage['tensors']} tensors map to {components} layers"
    ignored = coverage.get("ignored") or {}
    if ignored:
        reasons = ", ".join(
            f"{reason} ×{count}" if len(ignored) > 1 else reason for reason, count in sorted(ignored.items())
        )
        text += f"; {sum(ignored.values())} ignored ({reasons})"
    return text


class LoRAUpload(models.Model):
    """A direct-to-storage multipart upload in progress. Deleted when completed or aborted;
    beat aborts the ones past `expires_at`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="lora_uploads")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    original_filename = models.CharField(max_length=255)
    object_key = models.CharField(max_length=500, unique=True)
    storage_upload_id = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    part_size = models.BigIntegerField()
    options = models.JSONField(default=dict, blank=True, help_text="name, version, description, tags, expert")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "LoRA upload"

    def __str__(self) -> str:
        return f"upload {self.id} of {self.original_filename}"


class LoRAPair(models.Model):
    """A Wan 2.2 high-noise LoRA and its low-noise partner, one library item with a default weight per expert.

    Each LoRA is a half of at most one pair (one-to-one on each side; the halves' roles keep a LoRA from being
    the high half of one pair and the low half of another). Unpairing deletes the pair, never a LoRA; deleting a
    half unpairs it first (`loras.services.pairs`)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="lora_pairs")
    name = models.CharField(max_length=100, validators=[MinLengthValidator(1)])
    high = models.OneToOneField(LoRA, on_delete=models.CASCADE, related_name="pair_as_high")
    low = models.OneToOneField(LoRA, on_delete=models.CASCADE, related_name="pair_as_low")
    weight_high = models.FloatField(default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    weight_low = models.FloatField(default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)])
    # As a LoRA's (loras/recommended.py): the pair is what a user picks, so it may carry its own.
    recommended_settings = models.JSONField(
        default=dict, blank=True, help_text="Any of steps, guidance, guidance_2, shift; optionally the model they suit."
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "LoRA pair"
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=~Q(high=models.F("low")), name="lora_pair_two_halves"),
            models.CheckConstraint(
                condition=Q(weight_high__gte=0.0, weight_high__lte=2.0, weight_low__gte=0.0, weight_low__lte=2.0),
                name="lora_pair_weight_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name
