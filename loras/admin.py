from django.contrib import admin, messages

from loras import services
from loras.models import LoRA, LoRAPair, LoRAUpload
from loras.selectors import human_size
from lorasite.errors import ApplicationError


class DeletedFilter(admin.SimpleListFilter):
    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request, model_admin):
        return [("no", "Not deleted"), ("yes", "Deleted")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(deleted_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(deleted_at__isnull=True)
        return queryset


@admin.register(LoRA)
class LoRAAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "version",
        "workspace",
        "base_model",
        "expert",
        "status",
        "is_active",
        "readable_size",
        "created_at",
        "deleted_at",
    ]
    list_filter = ["workspace", "base_model", "status", "is_active", DeletedFilter, "expert"]
    # A hash pasted from Civitai or an output's "Lora hashes" finds the file (prefixes: search is icontains).
    search_fields = ["name", "sha256", "autov2", "autov3", "blake3", "original_filename"]
    list_select_related = ["workspace", "created_by"]
    readonly_fields = [
        "sha256",
        "autov2",
        "autov3",
        "blake3",
        "file",
        "file_size",
        "original_filename",
        "status",
        "error",
        "base_model",
        "rank",
        "alpha",
        "key_format",
        "tensor_count",
        "dtype",
        "header_metadata",
        "training_metadata",
        "module_shapes",
        "created_by",
        "created_at",
        "updated_at",
        "last_used_at",
        "use_count",
        "deleted_at",
        "purged_at",
    ]
    actions = ["deactivate", "soft_delete", "restore"]

    @admin.display(description="Size", ordering="file_size")
    def readable_size(self, lora: LoRA) -> str:
        return human_size(lora.file_size)

    @admin.action(description="Deactivate selected LoRAs")
    def deactivate(self, request, queryset):
        count = services.lora_set_active_many(lora_ids=list(queryset.values_list("id", flat=True)), active=False)
        self.message_user(request, f"{count} LoRA(s) deactivated.")

    @admin.action(description="Soft-delete selected LoRAs")
    def soft_delete(self, request, queryset):
        count = services.lora_soft_delete_many(lora_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{count} LoRA(s) deleted; their files are purged after the retention period.")

    @admin.action(description="Restore selected LoRAs")
    def restore(self, request, queryset):
        for lora in queryset.filter(deleted_at__isnull=False):
            try:
                services.lora_restore(lora=lora)
            except ApplicationError as error:
                self.message_user(request, error.message, level=messages.ERROR)


@admin.register(LoRAUpload)
class LoRAUploadAdmin(admin.ModelAdmin):
    list_display = ["id", "original_filename", "workspace", "readable_size", "created_at", "expires_at"]
    list_filter = ["workspace"]
    readonly_fields = [f.name for f in LoRAUpload._meta.fields]

    @admin.display(description="Size", ordering="size")
    def readable_size(self, upload: LoRAUpload) -> str:
        return human_size(upload.size)


@admin.register(LoRAPair)
class LoRAPairAdmin(admin.ModelAdmin):
    """Read-only: pairing sets each half's expert, which `loras.services.pairs` does; deleting a pair only
    unpairs (both LoRAs stay)."""

    list_display = ["name", "workspace", "high", "low", "weight_high", "weight_low", "created_at"]
    list_filter = ["workspace"]
    search_fields = ["name", "high__name", "low__name"]
    readonly_fields = [f.name for f in LoRAPair._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
