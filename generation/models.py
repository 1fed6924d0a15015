import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from loras.models import LoRA, LoRAPair
from workspaces.models import Workspace


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobPurpose(models.TextChoices):
    USER = "user", "User"
    PREVIEW = "preview", "Preview"  # queued by auto preview (loras/previews.py); hidden from the default jobs list


class GenerationJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="generation_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    model_key = models.CharField(max_length=64)
    model_name = models.CharField(max_length=100, help_text="Display name when the job was made.")
    kind = models.CharField(max_length=5)  # image | video
    prompt = models.TextField(max_length=4000)
    negative_prompt = models.TextField(max_length=4000, blank=True)
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0)
    current_step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds per phase.")
    output_key = models.CharField(max_length=500, blank=True)
    poster_key = models.CharField(max_length=500, blank=True)
    thumb_key = models.CharField(
        max_length=500, blank=True, help_text="WebP ≤ 320 px beside the output, made once by the worker; for grids."
    )
    output_bytes = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Bytes of the output and poster as the worker stored them (0 until then); empty on jobs made before "
        "sizes were measured, whose objects the bucket is asked about.",
    )
    purpose = models.CharField(max_length=8, choices=JobPurpose.choices, default=JobPurpose.USER, db_index=True)
    # The image an image-to-video job starts from; its key is also kept in params["image_key"], the snapshot.
    input = models.ForeignKey("GenerationInput", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the first attempt started.")
    attempt_started_at = models.DateTimeField(null=True, blank=True, help_text="When the current attempt started.")
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the broker accepted the job's latest message; empty until it has."
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "-created_at"]),
            # The base model's figures on a LoRA page: the workspace's jobs on the family's models (ratings/).
            models.Index(fields=["workspace", "model_key"], name="job_workspace_model"),
            # The storage meter on every page: the sum of the measured outputs is read off this index alone, and
            # the jobs from before sizes were measured (empty) are found at once.
            models.Index(fields=["workspace", "output_bytes"], name="job_workspace_output_bytes"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name}: {self.prompt[:40]} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


def weights_label(weight: float | None, weight_low: float | None = None) -> str:
    """'0.80', or 'high 1.00 · low 0.50' when the two experts have their own weights; '—' when not known. The one
    wording of a LoRA's weights on every page (jobs, recipes, provenance)."""
    if weight is None:
        return "—"
    if weight_low is None:
        return f"{weight:.2f}"
    return f"high {weight:.2f} · low {weight_low:.2f}"


class JobLoRA(models.Model):
    """A snapshot of one LoRA as the job used it, so history survives renames and deletes."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="job_loras")
    lora = models.ForeignKey(LoRA, null=True, on_delete=models.SET_NULL, related_name="job_uses")
    position = models.PositiveSmallIntegerField()
    lora_ref = models.PositiveBigIntegerField(help_text="The LoRA's id, kept if the row is ever removed.")
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=40)
    sha256 = models.CharField(max_length=64)
    file_key = models.CharField(max_length=500)
    file_size = models.BigIntegerField()
    weight = models.FloatField(help_text="The LoRA's weight; with expert 'both' and a weight_low, the high-noise one.")
    weight_low = models.FloatField(
        null=True, blank=True, help_text="The low-noise expert's weight (expert 'both' only); empty: the same weight."
    )
    expert = models.CharField(max_length=4)

    class Meta:
        ordering = ["job", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="job_lora_position_unique")]
        # A LoRA page's latest uses: rows are made with their job, so the newest ids are the newest jobs.
        indexes = [models.Index(fields=["lora_ref", "-id"], name="job_lora_ref_newest")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} @ {self.weight_label} ({self.expert})"

    @property
    def weight_label(self) -> str:
        return weights_label(self.weight, self.weight_low)


class Recipe(models.Model):
    """A named stack shared by the workspace, to run again: a model, LoRAs with their experts and weights, the
    params that differ from the model's defaults, and a prompt template whose `{trigger}` the LoRAs' trigger words
    fill (generation/recipes/)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="recipes")
    name = models.CharField(max_length=100)
    model_key = models.CharField(max_length=64)
    prompt_template = models.TextField(max_length=4000, help_text="{trigger} becomes the LoRAs' trigger words.")
    negative_prompt = models.TextField(max_length=4000, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="Job params; those left out take the defaults.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="recipe_name_unique")]

    def __str__(self) -> str:
        return self.name


class RecipeLoRA(models.Model):
    """One LoRA of a recipe. The name is kept so that a recipe whose LoRA is gone can still say which."""

    recipe = models.ForeignKey(Recipe, on_delete=models.CASCADE, related_name="recipe_loras")
    lora = models.ForeignKey(LoRA, null=True, on_delete=models.SET_NULL, related_name="recipe_uses")
    lora_ref = models.PositiveBigIntegerField(help_text="The LoRA's id, kept if the row is ever removed.")
    name = models.CharField(max_length=100)
    position = models.PositiveSmallIntegerField()
    weight = models.FloatField(help_text="With expert 'both' and a weight_low, the high-noise weight.")
    weight_low = models.FloatField(null=True, blank=True, help_text="The low-noise weight (expert 'both' only).")
    expert = models.CharField(max_length=4)

    class Meta:
        ordering = ["recipe", "position"]
        constraints = [models.UniqueConstraint(fields=["recipe", "position"], name="recipe_lora_position_unique")]

    def __str__(self) -> str:
        return f"{self.name} @ {self.weight} ({self.expert})"


class OutputRating(models.Model):
    """One member's 1–5 stars for one job's output (generation/ratings/); changeable and removable. Viewers rate too:
    they judge outputs even though they do not generate."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="ratings")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    stars = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(5)])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "user"], name="output_rating_one_per_user"),
            models.CheckConstraint(condition=models.Q(stars__gte=1, stars__lte=5), name="output_rating_stars_range"),
        ]

    def __str__(self) -> str:
        return f"{self.stars}★ for job {self.job_id}"


class UsageCounter(models.Model):
    """Maintained figures of the outputs made with one LoRA, with one pair (either half), or with no LoRA on one
    model of a workspace (the LoRA page's "vs the base model"): kept by generation/usage.py on every job create,
    finish and delete and every rating change, so the page reads one row instead of aggregating the whole history.
    Preview jobs do not count."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    lora = models.ForeignKey(LoRA, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    pair = models.ForeignKey(LoRAPair, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    model_key = models.CharField(max_length=64, blank=True, help_text="The model of a no-LoRA row; empty otherwise.")
    generations = models.IntegerField(default=0)
    succeeded = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    stars_1 = models.IntegerField(default=0)
    stars_2 = models.IntegerField(default=0)
    stars_3 = models.IntegerField(default=0)
    stars_4 = models.IntegerField(default=0)
    stars_5 = models.IntegerField(default=0)
    last_used = models.DateTimeField(null=True, blank=True, help_text="When the newest job counted was created.")
    latest_output = models.ForeignKey(
        GenerationJob,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A LoRA's newest succeeded job with a thumbnail: its card's preview when it has none of its own.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["lora"], condition=models.Q(lora__isnull=False), name="usage_counter_one_per_lora"
            ),
            models.UniqueConstraint(
                fields=["pair"], condition=models.Q(pair__isnull=False), name="usage_counter_one_per_pair"
            ),
            models.UniqueConstraint(
                fields=["workspace", "model_key"],
                condition=models.Q(lora__isnull=True, pair__isnull=True),
                name="usage_counter_one_per_base_model",
            ),
        ]

    def __str__(self) -> str:
        if self.lora_id or self.pair_id:
            return f"usage of LoRA {self.lora_id}" if self.lora_id else f"usage of pair {self.pair_id}"
        return f"usage of {self.model_key} with no LoRA"


class SweepAxisKind(models.TextChoices):
    """What one axis of a sweep varies (generation/experiments/sweeps.py applies each to a cell's inputs)."""

    WEIGHT = "weight", "LoRA weight"
    WEIGHT_LOW = "weight_low", "Low-noise expert weight"
    VERSION = "version", "LoRA version"
    STEPS = "steps", "Steps"
    GUIDANCE = "guidance", "Guidance"


class Sweep(models.Model):
    """A strength sweep or XY grid: one prompt and seed, a LoRA stack, and one or two axes; each cell is an ordinary
    GenerationJob (SweepCell), so cells can be rated, used as previews and saved as recipes."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="sweeps")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=100, blank=True)
    model_key = models.CharField(max_length=64)
    prompt = models.TextField(max_length=4000)
    negative_prompt = models.TextField(max_length=4000, blank=True)
    params = models.JSONField(default=dict, help_text="The params every cell shares (an axis may override one).")
    loras = models.JSONField(
        default=list, blank=True, help_text="The stack every cell starts from: [{lora_id, weight, expert}]."
    )
    x_axis = models.JSONField(help_text='{"kind", "lora_id"?, "values": [...]}')
    y_axis = models.JSONField(null=True, blank=True, help_text="The optional second axis; empty: one row.")
    cancelled_at = models.DateTimeField(null=True, blank=True)
    sheet_key = models.CharField(max_length=500, blank=True, help_text="The contact sheet PNG, once made.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name or f"Sweep {self.id}"


class SweepCell(models.Model):
    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="cells")
    job = models.OneToOneField(GenerationJob, null=True, on_delete=models.SET_NULL, related_name="sweep_cell")
    x = models.PositiveSmallIntegerField()
    y = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["sweep", "y", "x"]
        constraints = [models.UniqueConstraint(fields=["sweep", "x", "y"], name="sweep_cell_unique")]

    def __str__(self) -> str:
        return f"Sweep {self.sweep_id} ({self.x}, {self.y})"


class GenerationInput(models.Model):
    """An image uploaded to start a generation from (image-to-video); generation/inputs.py. The stored object is the
    upload as sent; the worker resizes it to the job's resolution with the job's `image_fit`."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="generation_inputs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    key = models.CharField(max_length=500, unique=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    content_type = models.CharField(max_length=20)
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.width}×{self.height} {self.content_type} ({self.key})"


class ABTest(models.Model):
    """A blind A/B test of two LoRA stacks: every prompt × seed is run once with A and once with B, the same params
    otherwise (ABPair); members vote on each pair without seeing which side is which (generation/experiments/)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="ab_tests")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=100, blank=True)
    model_key = models.CharField(max_length=64)
    negative_prompt = models.TextField(max_length=4000, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="Shared by every job; each pair has its own seed.")
    # Empty: the base model alone (A/B against no LoRA).
    stack_a = models.JSONField(default=list, blank=True, help_text="[{lora_id, weight, expert, weight_low}]")
    stack_b = models.JSONField(default=list, blank=True)
    label_a = models.CharField(max_length=200, help_text="'anime v2', shown only with the results.")
    label_b = models.CharField(max_length=200)
    prompts = models.JSONField(default=list)
    seeds = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name or f"{self.label_a} vs {self.label_b}"


class ABPair(models.Model):
    test = models.ForeignKey(ABTest, on_delete=models.CASCADE, related_name="pairs")
    prompt_index = models.PositiveSmallIntegerField()
    seed = models.PositiveBigIntegerField()
    job_a = models.OneToOneField(GenerationJob, null=True, on_delete=models.SET_NULL, related_name="ab_pair_a")
    job_b = models.OneToOneField(GenerationJob, null=True, on_delete=models.SET_NULL, related_name="ab_pair_b")

    class Meta:
        ordering = ["test", "prompt_index", "seed"]
        constraints = [models.UniqueConstraint(fields=["test", "prompt_index", "seed"], name="ab_pair_unique")]

    def __str__(self) -> str:
        return f"A/B test {self.test_id}, prompt {self.prompt_index}, seed {self.seed}"


class ABChoice(models.TextChoices):
    """What a vote means for the results. Voters pick left or right; which side showed A is per member."""

    A = "a", "A"
    B = "b", "B"
    TIE = "tie", "Tie"


class ABVote(models.Model):
    pair = models.ForeignKey(ABPair, on_delete=models.CASCADE, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    choice = models.CharField(max_length=3, choices=ABChoice.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pair", "user"], name="ab_vote_one_per_user")]

    def __str__(self) -> str:
        return f"{self.choice} on pair {self.pair_id}"
