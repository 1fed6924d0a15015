import copy

import django_filters
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from loras import selectors, services
from loras.filters import LoRAFilterSet
from loras.lora_inspect import family_label
from loras.models import Expert, LoRA
from lorasite.api import JSONParser, error_responses, paginated, parse_input
from lorasite.pagination import PageNumberPagination
from workspaces.quota import quota_check_upload
from workspaces.scoping import WorkspaceScopedAPIView


class CoverageOutput(serializers.Serializer):
    """What diffusers makes of the file's tensors; computed by the ingest task (null before, or for families
    diffusers has no loader for)."""

    text = serializers.CharField(help_text='"300 of 302 tensors map to transformer layers; 2 ignored (dora_scale)"')
    tensors = serializers.IntegerField(help_text="Tensors in the file.")
    mapped = serializers.IntegerField(help_text="Tensors diffusers turns into LoRA weights of a pipeline component.")
    components = serializers.DictField(child=serializers.IntegerField(), help_text="Component → mapped tensors.")
    ignored = serializers.DictField(child=serializers.IntegerField(), help_text="Reason → tensors diffusers drops.")
    ignored_tensors = serializers.ListField(
        child=serializers.ListField(child=serializers.CharField(), min_length=2, max_length=2),
        help_text="[tensor name, reason] for the first 20 ignored tensors.",
    )


class LoRAOutput(serializers.ModelSerializer):
    adapter_name = serializers.CharField(read_only=True)
    base_model_display = serializers.SerializerMethodField()
    coverage = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", default=None)

    class Meta:
        model = LoRA
        fields = [
            "id",
            "adapter_name",
            "name",
            "version",
            "original_filename",
            "file_size",
            "sha256",
            "autov2",
            "autov3",
            "blake3",
            "status",
            "error",
            "base_model",
            "base_model_display",
            "expert",
            "rank",
            "alpha",
            "key_format",
            "tensor_count",
            "dtype",
            "coverage",
            "header_metadata",
            "training_metadata",
            "trigger_words",
            "tags",
            "description",
            "preferred_weight",
            "is_active",
            "created_by",
            "created_at",
            "updated_at",
            "last_used_at",
            "use_count",
        ]

    def get_base_model_display(self, lora: LoRA) -> str:
        return family_label(lora.base_model)

    @extend_schema_field(CoverageOutput(allow_null=True))
    def get_coverage(self, lora: LoRA) -> dict | None:
        if not lora.coverage:
            return None
        return CoverageOutput({**lora.coverage, "text": lora.coverage_text}).data


class SameWeightsOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()


class LoRADetailOutput(LoRAOutput):
    """One LoRA as its own answer (upload, detail, edit): also the LoRAs with the same weights."""

    same_weights_as = serializers.SerializerMethodField(
        help_text="A warning: the workspace's LoRAs with the same tensor data (AutoV3) and other metadata "
        "(another sha256). Empty until the file is hashed."
    )

    class Meta(LoRAOutput.Meta):
        fields = [*LoRAOutput.Meta.fields, "same_weights_as"]

    @extend_schema_field(SameWeightsOutput(many=True))
    def get_same_weights_as(self, lora: LoRA) -> list[dict]:
        return SameWeightsOutput(selectors.lora_same_weights(lora=lora), many=True).data


class StringList(serializers.ListField):
    child = serializers.CharField(max_length=64, allow_blank=False)


class LoRAOptionsInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    version = serializers.CharField(max_length=40, required=False)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    tags = StringList(required=False, max_length=50)
    expert = serializers.ChoiceField(choices=Expert.choices, required=False)
    preferred_weight = serializers.FloatField(min_value=0.0, max_value=2.0, required=False)

    @staticmethod
    def options(data: dict) -> services.LoRAOptions:
        return services.LoRAOptions(**{**data, "tags": tuple(data.get("tags", ()))})


class LoRAUploadInput(LoRAOptionsInput):
    file = serializers.FileField(allow_empty_file=True)

    def to_internal_value(self, data):
        # multipart/form-data sends tags as repeated fields or one comma-separated string.
        if hasattr(data, "getlist"):
            data = copy.copy(data)  # shallow: QueryDict.copy() deep-copies, and spooled upload files cannot be
            tags = [t for value in data.getlist("tags") for t in value.split(",") if t.strip()]
            data.setlist("tags", [t.strip() for t in tags])
        return super().to_internal_value(data)


def filter_parameters(filterset_class: type[django_filters.FilterSet]) -> list[OpenApiParameter]:
    """A FilterSet's filters as an operation's query parameters; a choice filter's values become an enum."""
    parameters = []
    for name, declared in filterset_class.base_filters.items():
        choices = declared.extra.get("choices")
        enum = [value for value, _label in choices if value] if choices else None
        parameters.append(OpenApiParameter(name, str, description=str(declared.label), enum=enum))
    return parameters


class LoRAListCreateAPI(WorkspaceScopedAPIView):
    pagination_class = PageNumberPagination
    parser_classes = [MultiPartParser, JSONParser]

    @extend_schema(
        parameters=filter_parameters(LoRAFilterSet),
        responses={200: LoRAOutput(many=True), **error_responses(400, 401, 404)},
        tags=["loras"],
        summary="List the workspace's LoRAs (search, filters, ordering, pagination)",
    )
    def get(self, request, slug):
        queryset = selectors.lora_list(workspace=self.membership.workspace, filters=request.query_params)
        return paginated(request, self, queryset, LoRAOutput)

    @extend_schema(
        request={"multipart/form-data": LoRAUploadInput},
        responses={201: LoRADetailOutput, **error_responses(400, 401, 403, 404, 409, 413, 422)},
        tags=["loras"],
        summary="Upload a .safetensors LoRA through the app (streamed to storage)",
    )
    def post(self, request, slug):
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        limit = min(settings.LORASITE_MAX_LORA_BYTES, settings.LORASITE_MAX_APP_UPLOAD_BYTES)
        if declared > limit + 1024 * 1024:  # refused before the body is read (1 MiB for the form around the file)
            services.check_declared_file(filename="upload.safetensors", size=declared)
            services.check_app_upload_size(declared)
        # The file is at least the body less the form around it: one that cannot fit the quota is refused unread.
        quota_check_upload(workspace=self.membership.workspace, size=max(declared - 1024 * 1024, 0))
        data = parse_input(LoRAUploadInput, request.data)
        upload = data.pop("file")
        lora = services.lora_ingest_uploaded_file(
            actor=self.membership, uploaded_file=upload, options=LoRAOptionsInput.options(data)
        )
        return Response(LoRADetailOutput(lora).data, status=status.HTTP_201_CREATED)


class UploadStartInput(LoRAOptionsInput):
    filename = serializers.CharField(max_length=255)
    size = serializers.IntegerField(min_value=0)


class UploadPartOutput(serializers.Serializer):
    part_number = serializers.IntegerField()
    url = serializers.CharField()


class UploadOutput(serializers.Serializer):
    upload_id = serializers.UUIDField(source="id")
    part_size = serializers.IntegerField()
    parts = UploadPartOutput(many=True)
    expires_at = serializers.DateTimeField()


def _upload_payload(request, upload) -> dict:
    parts = [
        {**part, "url": part["url"] if part["url"].startswith("http") else request.build_absolute_uri(part["url"])}
        for part in services.upload_part_urls(upload)
    ]
    return UploadOutput(
        {"id": upload.id, "part_size": upload.part_size, "parts": parts, "expires_at": upload.expires_at}
    ).data


class UploadStartAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=UploadStartInput,
        responses={201: UploadOutput, **error_responses(400, 401, 403, 404, 413)},
        tags=["loras"],
        summary="Start a direct-to-storage multipart upload; PUT each part to its URL",
    )
    def post(self, request, slug):
        data = parse_input(UploadStartInput, request.data)
        filename, size = data.pop("filename"), data.pop("size")
        upload = services.lora_upload_start(
            actor=self.membership, filename=filename, size=size, options=LoRAOptionsInput.options(data)
        )
        return Response(_upload_payload(request, upload), status=status.HTTP_201_CREATED)


class UploadCompleteInput(serializers.Serializer):
    class Part(serializers.Serializer):
        part_number = serializers.IntegerField(min_value=1, max_value=services.S3_MAX_PARTS)
        etag = serializers.CharField(max_length=200)

    parts = Part(many=True, allow_empty=False)


class UploadDetailAPI(WorkspaceScopedAPIView):
    @extend_schema(
        responses={200: UploadOutput, **error_responses(401, 403, 404)},
        tags=["loras"],
        summary="Fresh part URLs for an open upload",
    )
    def get(self, request, slug, upload_id):
        upload = services.lora_upload_refresh(actor=self.membership, upload_id=upload_id)
        return Response(_upload_payload(request, upload))

    @extend_schema(
        responses={204: None, **error_responses(401, 403, 404, 409)},
        tags=["loras"],
        summary="Abort an upload (409 once it is complete: the answer names its LoRA)",
    )
    def delete(self, request, slug, upload_id):
        services.lora_upload_abort(actor=self.membership, upload_id=upload_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class UploadCompleteAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=UploadCompleteInput,
        responses={201: LoRADetailOutput, **error_responses(400, 401, 403, 404, 409, 422)},
        tags=["loras"],
        summary="Finish a multipart upload: the LoRA is created as processing, then ready or failed",
    )
    def post(self, request, slug, upload_id):
        parts = parse_input(UploadCompleteInput, request.data)["parts"]
        lora = services.lora_upload_complete(actor=self.membership, upload_id=upload_id, parts=[dict(p) for p in parts])
        return Response(LoRADetailOutput(lora).data, status=status.HTTP_201_CREATED)


class ImportInput(LoRAOptionsInput):
    file_path = serializers.CharField(max_length=4096, help_text="Relative to the workspace's import folder.")


class ImportAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=ImportInput,
        responses={201: LoRADetailOutput, **error_responses(400, 401, 403, 404, 409, 413, 422)},
        tags=["loras"],
        summary="Copy a LoRA from this workspace's server import folder, <import dir>/<slug>/ (owners and admins)",
    )
    def post(self, request, slug):
        data = parse_input(ImportInput, request.data)
        file_path = data.pop("file_path")
        lora = services.lora_import_server_file(
            actor=self.membership, file_path=file_path, options=LoRAOptionsInput.options(data)
        )
        return Response(LoRADetailOutput(lora).data, status=status.HTTP_201_CREATED)


class VersionsAPI(WorkspaceScopedAPIView):
    pagination_class = PageNumberPagination

    class VersionsInput(serializers.Serializer):
        name = serializers.CharField(max_length=100)

    @extend_schema(
        parameters=[VersionsInput],
        responses={200: LoRAOutput(many=True), **error_responses(400, 401, 404)},
        tags=["loras"],
    )
    def get(self, request, slug):
        name = parse_input(self.VersionsInput, request.query_params)["name"]
        return paginated(
            request, self, selectors.lora_versions(workspace=self.membership.workspace, name=name), LoRAOutput
        )


class LoRAUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    version = serializers.CharField(max_length=40)
    description = serializers.CharField(max_length=5000, allow_blank=True)
    tags = StringList(max_length=50)
    trigger_words = StringList(max_length=50)
    preferred_weight = serializers.FloatField(min_value=0.0, max_value=2.0)
    expert = serializers.ChoiceField(choices=Expert.choices)
    is_active = serializers.BooleanField()


class LoRADetailAPI(WorkspaceScopedAPIView):
    def _lora(self, lora_id: int) -> LoRA:
        return selectors.lora_get(workspace=self.membership.workspace, lora_id=lora_id)

    @extend_schema(responses={200: LoRADetailOutput, **error_responses(401, 404)}, tags=["loras"])
    def get(self, request, slug, lora_id):
        return Response(LoRADetailOutput(self._lora(lora_id)).data)

    @extend_schema(
        request=LoRAUpdateInput,
        responses={200: LoRADetailOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["loras"],
    )
    def patch(self, request, slug, lora_id):
        changes = parse_input(LoRAUpdateInput, request.data, partial=True)
        lora = services.lora_update(actor=self.membership, lora=self._lora(lora_id), **changes)
        return Response(LoRADetailOutput(lora).data)

    @extend_schema(
        responses={204: None, **error_responses(401, 403, 404)}, tags=["loras"], summary="Soft-delete a LoRA"
    )
    def delete(self, request, slug, lora_id):
        services.lora_soft_delete(actor=self.membership, lora=self._lora(lora_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DownloadOutput(serializers.Serializer):
    url = serializers.CharField()
    expires_at = serializers.DateTimeField()


class LoRADownloadAPI(WorkspaceScopedAPIView):
    @extend_schema(
        responses={200: DownloadOutput, **error_responses(401, 404)},
        tags=["loras"],
        summary="A signed download URL (≤ 1 hour)",
    )
    def get(self, request, slug, lora_id):
        lora = selectors.lora_get(workspace=self.membership.workspace, lora_id=lora_id)
        url, expires_at = selectors.lora_download_url(lora=lora)
        url = url if url.startswith("http") else request.build_absolute_uri(url)
        return Response(DownloadOutput({"url": url, "expires_at": expires_at}).data)
