from django.urls import path

from loras import apis, compare_apis, preview_apis

prefix = "workspaces/<slug:slug>/loras/"
pairs = "workspaces/<slug:slug>/pairs/"

urlpatterns = [
    path(prefix, apis.LoRAListCreateAPI.as_view(), name="lora-list"),
    path(prefix + "uploads/", apis.UploadStartAPI.as_view(), name="lora-upload-start"),
    path(prefix + "uploads/<uuid:upload_id>/", apis.UploadDetailAPI.as_view(), name="lora-upload-detail"),
    path(prefix + "uploads/<uuid:upload_id>/complete/", apis.UploadCompleteAPI.as_view(), name="lora-upload-complete"),
    path(prefix + "import/", apis.ImportAPI.as_view(), name="lora-import"),
    path(prefix + "versions/", apis.VersionsAPI.as_view(), name="lora-versions"),
    path(prefix + "compare/", compare_apis.LoRACompareAPI.as_view(), name="lora-compare"),
    path(prefix + "bulk/", apis.LoRABulkAPI.as_view(), name="lora-bulk"),
    path(prefix + "<int:lora_id>/", apis.LoRADetailAPI.as_view(), name="lora-detail"),
    path(prefix + "<int:lora_id>/download/", apis.LoRADownloadAPI.as_view(), name="lora-download"),
    path(prefix + "<int:lora_id>/preview/", preview_apis.LoRAPreviewAPI.as_view(), name="lora-preview"),
    path(pairs, apis.PairListCreateAPI.as_view(), name="pair-list"),
    path(pairs + "<int:pair_id>/", apis.PairDetailAPI.as_view(), name="pair-detail"),
]
