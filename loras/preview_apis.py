"""The preview endpoint of a LoRA: `…/loras/<id>/preview/` — GET, PUT (upload), POST (from a job), DELETE."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from loras import previews, selectors
from loras.models import LoRA, PreviewKind
from lorasite.api import JSONParser, error_responses, parse_input
from lorasite.errors import PayloadTooLarge
from workspaces.scoping import WorkspaceScopedAPIView

# The multipart form around the file.
FORM_OVERHEAD_BYTES = 1024 * 1024


class PreviewOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=PreviewKind.choices, allow_null=True)
    source = serializers.ChoiceField(
        choices=["upload", "job"], allow_null=True, help_text="An upload, or a copy of a job's output."
    )
    url = serializers.CharField(allow_null=True, help_text="The image or video, signed (≤ 1 hour).")
    thumb_url = serializers.CharField(
        allow_null=True, help_text="WebP ≤ 320 px, signed; null for a video whose poster could not be made."
    )
    job_id = serializers.UUIDField(allow_null=True, help_text="The job the preview was copied from.")
    expires_at = serializers.DateTimeField(allow_null=True)


class PreviewUploadInput(serializers.Serializer):
    file = serializers.FileField(
        allow_empty_file=True,  # the service names the problem ("The file is empty.")
        help_text="PNG, JPEG or WebP image (≤ 10 MiB) or MP4 or WebM video (≤ 20 MiB).",
    )


class PreviewFromJobInput(serializers.Serializer):
    job_id = serializers.UUIDField(help_text="A succeeded job of this workspace that used the LoRA.")


class LoRAPreviewAPI(WorkspaceScopedAPIView):
    parser_classes = [MultiPartParser, JSONParser]

    def _lora(self, lora_id: int) -> LoRA:
        return selectors.lora_get(workspace=self.membership.workspace, lora_id=lora_id)

    def _answer(self, request, lora: LoRA, code: int = status.HTTP_200_OK) -> Response:
        data = previews.lora_preview_get(lora=lora)
        for name in ("url", "thumb_url"):  # the local store signs app paths
            if data[name] and not data[name].startswith("http"):
                data[name] = request.build_absolute_uri(data[name])
        return Response(PreviewOutput(data).data, status=code)

    @extend_schema(
        responses={200: PreviewOutput, **error_responses(401, 404)},
        tags=["loras"],
        summary="The LoRA's preview (all null when it has none: cards then show its last job's thumbnail)",
    )
    def get(self, request, slug, lora_id):
        return self._answer(request, self._lora(lora_id))

    @extend_schema(
        request={"multipart/form-data": PreviewUploadInput},
        responses={200: PreviewOutput, **error_responses(400, 401, 403, 404, 413)},
        tags=["loras"],
        summary="Upload an image or short video as the preview (replaces the old one)",
    )
    def put(self, request, slug, lora_id):
        lora = self._lora(lora_id)
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > previews.PREVIEW_VIDEO_MAX_BYTES + FORM_OVERHEAD_BYTES:  # refused before the body is read
            raise PayloadTooLarge(
                "Previews are limited to 10 MiB for images and 20 MiB for videos.",
                limit_bytes=previews.PREVIEW_VIDEO_MAX_BYTES,
            )
        upload = parse_input(PreviewUploadInput, request.data)["file"]
        lora = previews.lora_preview_upload(actor=self.membership, lora=lora, uploaded_file=upload)
        return self._answer(request, lora)

    @extend_schema(
        request=PreviewFromJobInput,
        responses={200: PreviewOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["loras"],
        summary="Use a succeeded job's output as the preview (400: the job did not use this LoRA)",
    )
    def post(self, request, slug, lora_id):
        job_id = parse_input(PreviewFromJobInput, request.data)["job_id"]
        lora = previews.lora_preview_from_job(actor=self.membership, lora=self._lora(lora_id), job_id=job_id)
        return self._answer(request, lora)

    @extend_schema(
        responses={204: None, **error_responses(401, 403, 404)}, tags=["loras"], summary="Remove the preview"
    )
    def delete(self, request, slug, lora_id):
        previews.lora_preview_delete(actor=self.membership, lora=self._lora(lora_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
