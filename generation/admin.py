"""Generation jobs in the admin, for looking into them: every input, timing and LoRA snapshot, read-only. Jobs are
made, cancelled, retried and deleted through the dashboard and the API, whose services keep the queue, the job's
state and its stored output in step; an edit or a delete here would bypass them."""

from django.contrib import admin
from django.db import models
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from generation.models import ABTest, GenerationJob, JobLoRA, Sweep
from generation.templatetags.generation_extras import phase_timings
from loras.selectors import human_size


class ReadOnlyAdmin:
    """Every field of the row shown, none changed; a field added to the model shows up without a change here."""

    readonly_extras: tuple[str, ...] = ()
    hidden_fields: tuple[str, ...] = ()

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        fields = [field.name for field in self.model._meta.fields if field.name not in self.hidden_fields]
        return [*fields, *self.readonly_extras]

    def get_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        return self.get_readonly_fields(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False


class JobLoRAInline(ReadOnlyAdmin, admin.TabularInline):
    model = JobLoRA
    verbose_name = "LoRA"
    verbose_name_plural = "LoRAs, as the job used them"
    extra = 0
    hidden_fields = ("id", "job", "file_size")  # the size is shown in words
    readonly_extras = ("readable_size",)

    @admin.display(description="File size")
    def readable_size(self, job_lora: JobLoRA) -> str:
        return human_size(job_lora.file_size)


@admin.register(GenerationJob)
class GenerationJobAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["short_id", "model_key", "workspace", "status", "prompt_start", "created_by", "created_at"]
    list_filter = ["status", "model_key", "workspace", "created_at"]
    search_fields = ["prompt", "id"]
    list_select_related = ["workspace", "created_by"]
    date_hierarchy = "created_at"
    hidden_fields = ("timings",)  # shown as `phase_timings`, in the job page's words and order
    readonly_extras = ("phase_timings",)
    inlines = [JobLoRAInline]

    @admin.display(description="Job", ordering="id")
    def short_id(self, job: GenerationJob) -> str:
        return str(job.id)[:8]

    @admin.display(description="Prompt")
    def prompt_start(self, job: GenerationJob) -> str:
        return job.prompt if len(job.prompt) <= 60 else f"{job.prompt[:59]}…"

    @admin.display(description="Timings")
    def phase_timings(self, job: GenerationJob) -> str:
        if not job.timings:
            return "—"
        rows = ((label, f"{seconds:.2f}") for label, seconds in phase_timings(job.timings))
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}: {} s</li>", rows))


@admin.register(Sweep)
class SweepAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Sweeps read-only: their cells are ordinary jobs (above); cancel through the dashboard or the API."""

    list_display = ["id", "name", "model_key", "workspace", "created_by", "created_at", "cancelled_at"]
    list_filter = ["workspace", "created_at"]
    list_select_related = ["workspace", "created_by"]


@admin.register(ABTest)
class ABTestAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """A/B tests read-only: a vote changed here would bypass the one-per-member rule the services keep."""

    list_display = ["id", "label_a", "label_b", "model_key", "workspace", "created_by", "created_at"]
    list_filter = ["workspace", "created_at"]
    list_select_related = ["workspace", "created_by"]
