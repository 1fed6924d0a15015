from django.urls import path, register_converter

from loras import compare_pages, pages, preview_pages, training_pages


class SectionConverter:
    """An editable part of the detail page (see loras.forms.SECTION_FORMS)."""

    regex = "name|details|active|triggers|recommended"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class EditorConverter(SectionConverter):
    """The parts that open an editor; the active switch saves at once."""

    regex = "name|details|triggers|recommended"


register_converter(SectionConverter, "lora_section")
register_converter(EditorConverter, "lora_editor")

app_name = "library"

urlpatterns = [
    path("w/<slug:slug>/loras/", pages.library, name="list"),
    path("w/<slug:slug>/loras/<int:lora_id>/", pages.lora_detail, name="detail"),
    path("w/<slug:slug>/loras/bulk/", pages.bulk_action, name="bulk"),
    path("w/<slug:slug>/loras/compare/", compare_pages.lora_compare, name="compare"),
    path("w/<slug:slug>/loras/<int:lora_id>/card/", pages.lora_card, name="card"),
    path("w/<slug:slug>/loras/<int:lora_id>/pair/", pages.pair_create, name="pair"),
    path("w/<slug:slug>/loras/<int:lora_id>/unpair/", pages.pair_unpair, name="unpair"),
    path("w/<slug:slug>/loras/<int:lora_id>/delete/", pages.lora_delete, name="delete"),
    path("w/<slug:slug>/loras/<int:lora_id>/download/", pages.lora_download, name="download"),
    path("w/<slug:slug>/loras/<int:lora_id>/preview/", preview_pages.preview_upload, name="preview"),
    path("w/<slug:slug>/previews/auto/", preview_pages.auto_preview_setting, name="auto-preview"),
    path("w/<slug:slug>/loras/<int:lora_id>/preview/remove/", preview_pages.preview_remove, name="preview-remove"),
    path(
        "w/<slug:slug>/loras/<int:lora_id>/preview/from-job/", preview_pages.preview_from_job, name="preview-from-job"
    ),
    path("w/<slug:slug>/loras/<int:lora_id>/training/", training_pages.training_record_edit, name="training"),
    path("w/<slug:slug>/loras/<int:lora_id>/<lora_section:section>/", pages.lora_section, name="section"),
    path(
        "w/<slug:slug>/loras/<int:lora_id>/<lora_editor:section>/edit/", pages.lora_section_editor, name="section-edit"
    ),
]
