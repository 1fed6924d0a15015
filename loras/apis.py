import copy

import django_filters
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from generation.model_registry import lora_wan_variants
from loras import selectors, services, versions
from loras.filters import LoRAFilterSet
from loras.lora_inspect import family_label
from loras.metrics import lora_metrics, pair_metrics
from loras.models import Expert, LoRA, LoRAPair
from loras.training import training_configuration
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


class LoRARefOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()


class LoRAPairRefOutput(serializers.Serializer):
    """The pair a LoRA is a half of, from that LoRA's side."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    role = serializers.ChoiceField(choices=[Expert.HIGH, Expert.LOW], help_text="This LoRA's half.")
    partner = LoRARefOutput(help_text="The other half.")
    weight_high = serializers.FloatField()
    weight_low = serializers.FloatField()


class ModelFitOutput(serializers.Serializer):
    key = serializers.CharField()
    display_name = serializers.CharField()
    kind = serializers.CharField()
    resolutions = serializers.ListField(child=serializers.CharField(), help_text='"1280×720", …')
    max_frames = serializers.IntegerField(allow_null=True)
    fps = serializers.IntegerField(allow_null=True, help_text="The model's default frame rate.")
    max_duration_seconds = serializers.FloatField(allow_null=True, help_text="max_frames / fps (video models).")


class LoRAOutput(serializers.ModelSerializer):
    """A LoRA. In a list, the serializer's context may hold `proposals` (one `selectors.PartnerProposals` for
    the page, so the workspace's names are read once)."""

    pair = serializers.SerializerMethodField()
    proposed_partner = serializers.SerializerMethodField(
        help_text="The unpaired LoRA whose file name differs from this one's only by the opposite expert marker "
        "(high_noise/low_noise, HIGH/LOW, HN/LN); null when there is none or more than one. Never paired silently: "
        "POST …/pairs/ to confirm."
    )
    fits = serializers.SerializerMethodField(help_text="The enabled models this LoRA fits, with their limits.")
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
            "training",
            "trigger_words",
            "tags",
            "description",
            "preferred_weight",
            "recommended_settings",
            "is_distill",
            "is_active",
            "created_by",
            "created_at",
            "updated_at",
            "last_used_at",
            "use_count",
            "pair",
            "proposed_partner",
            "fits",
        ]

    @extend_schema_field(LoRAPairRefOutput(allow_null=True))
    def get_pair(self, lora: LoRA) -> dict | None:
        pair = lora.pair
        if pair is None:
            return None
        role, partner = (Expert.HIGH, pair.low) if pair.high_id == lora.id else (Expert.LOW, pair.high)
        return LoRAPairRefOutput(
            {
                "id": pair.id,
                "name": pair.name,
                "role": role,
                "partner": partner,
                "weight_high": pair.weight_high,
                "weight_low": pair.weight_low,
            }
        ).data

    @extend_schema_field(LoRARefOutput(allow_null=True))
    def get_proposed_partner(self, lora: LoRA) -> dict | None:
        proposals = self.context.get("proposals") or selectors.PartnerProposals(lora.workspace)
        proposal = proposals.for_lora(lora)
        return None if proposal is None else LoRARefOutput(proposal.partner).data

    @extend_schema_field(ModelFitOutput(many=True))
    def get_fits(self, lora: LoRA) -> list[dict]:
        return ModelFitOutput(selectors.lora_fits(lora=lora), many=True).data

    def get_base_model_display(self, lora: LoRA) -> str:
        return family_label(lora.base_model)

    @extend_schema_field(CoverageOutput(allow_null=True))
    def get_coverage(self, lora: LoRA) -> dict | None:
        if not lora.coverage:
            return None
        return CoverageOutput({**lora.coverage, "text": lora.coverage_text}).data


class UsageFiguresOutput(serializers.Serializer):
    generations = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    rating_average = serializers.FloatField(allow_null=True, help_text="Mean stars; null without ratings.")
    rating_count = serializers.IntegerField()
    histogram = serializers.ListField(
        child=serializers.IntegerField(), min_length=5, max_length=5, help_text="Ratings with 1, 2, 3, 4, 5 stars."
    )
    last_used = serializers.DateTimeField(allow_null=True)


class LoRAMetricsOutput(serializers.Serializer):
    lora = UsageFiguresOutput(help_text="The jobs that used this LoRA.")
    base = UsageFiguresOutput(help_text="The workspace's jobs on the same base model with no LoRA.")
    base_models = serializers.ListField(child=serializers.CharField(), help_text="The models counted as the base.")
    headline = serializers.CharField(help_text='"4.1 ★ (37 ratings) vs 3.2 ★ for the base model (52)"')


class ConfigRowOutput(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    help = serializers.CharField(help_text="What it is and its typical range.")
    value = serializers.CharField(help_text='Formatted (1e-4, Yes/No, comma-separated lists); "" when not set.')


class ConfigGroupOutput(serializers.Serializer):
    category = serializers.CharField(help_text="Model, LoRA, Training, Hardware, Checkpointing, DPO (when present).")
    rows = ConfigRowOutput(many=True)


class LoRADetailOutput(LoRAOutput):
    """One LoRA as its own answer (upload, detail, edit): also the LoRAs with the same weights and its metrics."""

    configuration = serializers.SerializerMethodField(
        help_text="The training configuration by category (file metadata and the training record; the record wins); "
        "[] when nothing is known."
    )
    metrics = serializers.SerializerMethodField(
        help_text="Generations, outcomes and ratings of this LoRA's jobs and of the base model's jobs without LoRAs."
    )
    same_weights_as = serializers.SerializerMethodField(
        help_text="A warning: the workspace's LoRAs with the same tensor data (AutoV3) and other metadata "
        "(another sha256). Empty until the file is hashed."
    )
    wan_variants = serializers.SerializerMethodField(
        help_text='Wan LoRAs: the variants they fit, ["t2v", "i2v"], or ["i2v"] with image-conditioning layers; '
        "[] for other families."
    )

    class Meta(LoRAOutput.Meta):
        fields = [*LoRAOutput.Meta.fields, "same_weights_as", "metrics", "configuration", "wan_variants"]

    def get_wan_variants(self, lora: LoRA) -> list[str]:
        return lora_wan_variants(family=lora.base_model, module_shapes=lora.module_shapes)

    @extend_schema_field(LoRARefOutput(many=True))
    def get_same_weights_as(self, lora: LoRA) -> list[dict]:
        return LoRARefOutput(selectors.lora_same_weights(lora=lora), many=True).data

    @extend_schema_field(ConfigGroupOutput(many=True))
    def get_configuration(self, lora: LoRA) -> list[dict]:
        groups = training_configuration(training_metadata=lora.training_metadata, training=lora.training)
        return ConfigGroupOutput(groups, many=True).data

    @extend_schema_field(LoRAMetricsOutput)
    def get_metrics(self, lora: LoRA) -> dict:
        return LoRAMetricsOutput(lora_metrics(lora=lora)).data


TRAINING_HELP = (
    "The training record: {dataset, dataset_link (http/https), base_model_version, hyperparameters: {name: value}} "
    "with the Configuration tab's parameter names (learning_rate, epochs, network_dim…); unknown names are refused."
)


class StringList(serializers.ListField):
    child = serializers.CharField(max_length=64, allow_blank=False)


class LoRAOptionsInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    version = serializers.CharField(max_length=40, required=False)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    tags = StringList(required=False, max_length=50)
    expert = serializers.ChoiceField(choices=Expert.choices, required=False)
    preferred_weight = serializers.FloatField(min_value=0.0, max_value=2.0, required=False)
    training = serializers.JSONField(required=False, help_text=TRAINING_HELP)

    @staticmethod
    def options(data: dict) -> services.LoRAOptions:
        return services.LoRAOptions(**{**data, "tags": tuple(data.get("tags", ()))})


class LoRAUploadInput(LoRAOptionsInput):
    file = serializers.FileField(
        allow_empty_file=True,
        help_text="A .safetensors LoRA; or a PEFT checkpoint: adapter_model.safetensors with adapter_config, or a "
        ".zip holding both.",
    )
    adapter_config = serializers.FileField(
        required=False, help_text="A PEFT checkpoint's adapter_config.json, beside its adapter_model.safetensors."
    )

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


class TrainingHeadlineOutput(serializers.Serializer):
    epochs = serializers.IntegerField(allow_null=True)
    steps = serializers.IntegerField(allow_null=True)
    learning_rate = serializers.FloatField(allow_null=True)
    dataset_size = serializers.IntegerField(allow_null=True, help_text="Training images or clips.")
    text = serializers.CharField(help_text='"10 epochs · 2,000 steps · LR 1e-4 · 40 images"; "" when none is known.')


class VersionOutput(serializers.Serializer):
    id = serializers.IntegerField(source="lora.id")
    version = serializers.CharField(source="lora.version")
    created_at = serializers.DateTimeField(source="lora.created_at")
    file_size = serializers.IntegerField(source="lora.file_size")
    rank = serializers.IntegerField(source="lora.rank", allow_null=True)
    status = serializers.CharField(source="lora.status")
    training = TrainingHeadlineOutput(help_text="From the file's ss_* metadata and the training record.")
    metrics = UsageFiguresOutput()


class VersionGroupOutput(serializers.Serializer):
    name = serializers.CharField()
    versions = VersionOutput(many=True, help_text="In order of creation.")


class LoRAListCreateAPI(WorkspaceScopedAPIView):
    pagination_class = PageNumberPagination
    parser_classes = [MultiPartParser, JSONParser]

    class ListInput(serializers.Serializer):
        group_by_name = serializers.BooleanField(
            default=False, help_text="true: a page of names, each with its versions in order of creation."
        )

    @extend_schema(
        parameters=[*filter_parameters(LoRAFilterSet), ListInput],
        responses={
            200: PolymorphicProxySerializer(
                component_name="LoRAListItem",
                serializers=[LoRAOutput, VersionGroupOutput],
                resource_type_field_name=None,
                many=True,
            ),
            **error_responses(400, 401, 404),
        },
        tags=["loras"],
        summary="List the workspace's LoRAs (search, filters, ordering, pagination), or their versions by name",
    )
    def get(self, request, slug):
        workspace = self.membership.workspace
        if parse_input(self.ListInput, request.query_params)["group_by_name"]:
            paginator = self.pagination_class()
            names = versions.lora_group_names(workspace=workspace, filters=request.query_params)
            page = paginator.paginate_queryset(names, request, view=self)
            groups = versions.lora_version_groups(workspace=workspace, names=list(page), filters=request.query_params)
            return paginator.get_paginated_response(VersionGroupOutput(groups, many=True).data)
        queryset = selectors.lora_list(workspace=workspace, filters=request.query_params)
        return paginated(request, self, queryset, LoRAOutput, proposals=selectors.PartnerProposals(workspace))

    @extend_schema(
        request={"multipart/form-data": LoRAUploadInput},
        responses={201: LoRADetailOutput, **error_responses(400, 401, 403, 404, 409, 413, 422)},
        tags=["loras"],
        summary="Upload a .safetensors LoRA or a PEFT checkpoint through the app (streamed to storage)",
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
        upload, adapter_config = data.pop("file"), data.pop("adapter_config", None)
        options = LoRAOptionsInput.options(data)
        if adapter_config is not None or upload.name.lower().endswith(".zip"):
            lora = services.lora_register_peft(
                actor=self.membership, weights_file=upload, config_file=adapter_config, options=options
            )
        else:
            lora = services.lora_ingest_uploaded_file(actor=self.membership, uploaded_file=upload, options=options)
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
    recommended_settings = serializers.DictField(
        help_text="Any of steps, guidance, guidance_2, shift, and optionally model (a model key they suit); "
        "checked against that model's capabilities, else those of the models the LoRA fits. {} clears them."
    )
    is_distill = serializers.BooleanField(help_text="A step-distilled LoRA (few steps, guidance 1).")
    training = serializers.JSONField(help_text=TRAINING_HELP + " Replaces the whole record; {} clears it.")


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

    class DeleteInput(serializers.Serializer):
        pair = serializers.ChoiceField(
            choices=services.PAIR_ACTIONS,
            required=False,
            help_text="For a half of a pair: unpair (the other half stays) or delete_both. Without it, 409.",
        )

    @extend_schema(
        parameters=[DeleteInput],
        responses={204: None, **error_responses(400, 401, 403, 404, 409)},
        tags=["loras"],
        summary="Soft-delete a LoRA (a half of a pair: 409 naming the pair unless ?pair=unpair|delete_both)",
    )
    def delete(self, request, slug, lora_id):
        pair_action = parse_input(self.DeleteInput, request.query_params).get("pair")
        services.lora_soft_delete(actor=self.membership, lora=self._lora(lora_id), pair_action=pair_action)
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


# --- bulk actions -----------------------------------------------------------------------------------


class BulkInput(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1), allow_empty=False, max_length=500)
    action = serializers.ChoiceField(choices=[*services.BULK_UPDATE_ACTIONS, "delete", "add_to_recipe"])
    tags = StringList(required=False, max_length=50, help_text="For tag and untag.")
    recipe = serializers.IntegerField(min_value=1, required=False, help_text="For add_to_recipe: the recipe's id.")

    def validate(self, data: dict) -> dict:
        if data["action"] == "add_to_recipe" and "recipe" not in data:
            raise serializers.ValidationError({"recipe": ["add_to_recipe needs the recipe's id."]})
        return data


class BulkOutput(serializers.Serializer):
    action = serializers.CharField()
    changed = serializers.IntegerField(help_text="LoRAs changed (already so: not counted).")


class LoRABulkAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=BulkInput,
        responses={200: BulkOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["loras"],
        summary="Tag, untag, activate, deactivate, delete or add to a recipe many LoRAs at once (all or nothing)",
    )
    def post(self, request, slug):
        data = parse_input(BulkInput, request.data)
        if data["action"] == "delete":
            changed = services.lora_bulk_delete(actor=self.membership, lora_ids=data["ids"])
        elif data["action"] == "add_to_recipe":
            changed = services.lora_bulk_add_to_recipe(
                actor=self.membership, lora_ids=data["ids"], recipe_id=data["recipe"]
            )
        else:
            changed = services.lora_bulk_update(
                actor=self.membership, lora_ids=data["ids"], action=data["action"], tags=data.get("tags")
            )
        return Response(BulkOutput({"action": data["action"], "changed": changed}).data)


# --- pairs ------------------------------------------------------------------------------------------


class PairHalfOutput(serializers.ModelSerializer):
    class Meta:
        model = LoRA
        fields = ["id", "name", "version", "original_filename", "file_size", "status", "expert", "base_model"]


class PairOutput(serializers.ModelSerializer):
    high = PairHalfOutput()
    low = PairHalfOutput()
    created_by = serializers.CharField(source="created_by.username", default=None)

    class Meta:
        model = LoRAPair
        fields = [
            "id",
            "name",
            "high",
            "low",
            "weight_high",
            "weight_low",
            "recommended_settings",
            "created_by",
            "created_at",
            "updated_at",
        ]


class PairDetailOutput(PairOutput):
    """One pair as its own answer: also its metrics (the jobs that used either half, against the base model)."""

    metrics = serializers.SerializerMethodField()

    class Meta(PairOutput.Meta):
        fields = [*PairOutput.Meta.fields, "metrics"]

    @extend_schema_field(LoRAMetricsOutput)
    def get_metrics(self, pair: LoRAPair) -> dict:
        return LoRAMetricsOutput(pair_metrics(pair=pair)).data


class PairUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    weight_high = serializers.FloatField(min_value=0.0, max_value=2.0)
    weight_low = serializers.FloatField(min_value=0.0, max_value=2.0)
    recommended_settings = serializers.DictField(
        help_text="As a LoRA's: any of steps, guidance, guidance_2, shift and optionally model; {} clears them."
    )


class PairCreateInput(PairUpdateInput):
    recommended_settings = None  # set with PATCH once the pair exists
    high = serializers.IntegerField(min_value=1, help_text="The high-noise LoRA's id.")
    low = serializers.IntegerField(min_value=1, help_text="The low-noise LoRA's id.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in ("name", "weight_high", "weight_low"):  # defaults: see services.pair_create
            self.fields[field].required = False


class PairListCreateAPI(WorkspaceScopedAPIView):
    pagination_class = PageNumberPagination

    @extend_schema(responses={200: PairOutput(many=True), **error_responses(401, 404)}, tags=["pairs"])
    def get(self, request, slug):
        return paginated(request, self, selectors.pair_list(workspace=self.membership.workspace), PairOutput)

    @extend_schema(
        request=PairCreateInput,
        responses={201: PairOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["pairs"],
        summary="Pair a high-noise and a low-noise LoRA (name: the high half's without its marker; weights: each "
        "half's preferred weight)",
    )
    def post(self, request, slug):
        data = parse_input(PairCreateInput, request.data)
        workspace = self.membership.workspace
        high = selectors.lora_get(workspace=workspace, lora_id=data.pop("high"))
        low = selectors.lora_get(workspace=workspace, lora_id=data.pop("low"))
        pair = services.pair_create(actor=self.membership, high=high, low=low, **data)
        return Response(PairOutput(pair).data, status=status.HTTP_201_CREATED)


class PairDetailAPI(WorkspaceScopedAPIView):
    def _pair(self, pair_id: int) -> LoRAPair:
        return selectors.pair_get(workspace=self.membership.workspace, pair_id=pair_id)

    @extend_schema(responses={200: PairDetailOutput, **error_responses(401, 404)}, tags=["pairs"])
    def get(self, request, slug, pair_id):
        return Response(PairDetailOutput(self._pair(pair_id)).data)

    @extend_schema(
        request=PairUpdateInput, responses={200: PairOutput, **error_responses(400, 401, 403, 404)}, tags=["pairs"]
    )
    def patch(self, request, slug, pair_id):
        changes = parse_input(PairUpdateInput, request.data, partial=True)
        pair = services.pair_update(actor=self.membership, pair=self._pair(pair_id), **changes)
        return Response(PairOutput(pair).data)

    @extend_schema(
        responses={204: None, **error_responses(401, 403, 404)},
        tags=["pairs"],
        summary="Unpair: the pair goes, both LoRAs stay",
    )
    def delete(self, request, slug, pair_id):
        services.pair_delete(actor=self.membership, pair=self._pair(pair_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
