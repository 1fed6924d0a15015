from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from generation import selectors, services, worker_registry, worker_selectors
from generation.models import GenerationJob, JobLoRA, JobPurpose, JobStatus
from generation.provenance import job_provenance
from generation.ratings.apis import RatingOutput
from generation.ratings.selectors import NO_RATINGS, rating_summaries
from loras.models import Expert
from lorasite.api import error_responses, paginated, parse_input
from lorasite.errors import PermissionDenied, ServiceUnavailable
from lorasite.pagination import PageNumberPagination
from workspaces.scoping import WorkspaceScopedAPIView


class ModelOutput(serializers.Serializer):
    key = serializers.CharField()
    display_name = serializers.CharField()
    family = serializers.CharField()
    kind = serializers.ChoiceField(choices=["image", "video"])
    pipeline_class = serializers.CharField()
    path = serializers.CharField(required=False, help_text="Local diffusers directory of the weights (staff only).")
    weights_present = serializers.BooleanField()
    experts = serializers.DictField(
        child=serializers.CharField(), help_text='{"high": "transformer", "low": "transformer_2"}'
    )
    two_experts = serializers.BooleanField()
    image_input = serializers.ChoiceField(
        choices=["required", "optional", ""], help_text="Whether jobs take params.image (image-to-video)."
    )
    capabilities = serializers.DictField()
    enabled = serializers.BooleanField()
    demo = serializers.BooleanField()
    description = serializers.CharField()
    served = serializers.BooleanField(
        allow_null=True,
        help_text="Whether a live GPU worker serves this model now; null when the worker registry cannot be read.",
    )


class ModelListAPI(APIView):
    @extend_schema(
        responses={200: ModelOutput(many=True), **error_responses(401)}, tags=["generation"], summary="Base models"
    )
    def get(self, request):
        models = ModelOutput(selectors.model_list(), many=True).data
        if not request.user.is_staff:  # server paths are for operators only
            for model in models:
                del model["path"]
        return Response(models)


class LoRACostOutput(serializers.Serializer):
    placement = serializers.CharField(help_text="The model's placement the estimate assumes ('' if it fits nowhere).")
    apply_mode = serializers.ChoiceField(choices=["fused", "unfused"])
    adapter_bytes = serializers.IntegerField(help_text="The adapter's weights at bf16.")
    extra_device_bytes = serializers.IntegerField(help_text="GPU memory beyond the base model while its expert runs.")
    extra_host_bytes = serializers.IntegerField(help_text="Host memory: fused, a backup of the weights it changes.")
    load_seconds = serializers.FloatField(help_text="Estimated time to load it onto the device.")


class JobLoRAOutput(serializers.ModelSerializer):
    lora_id = serializers.IntegerField(source="lora_ref")
    deleted = serializers.SerializerMethodField(help_text="The LoRA has been deleted since (shown as 'Deleted LoRA').")
    cost = serializers.SerializerMethodField(help_text="Estimated: what this LoRA adds on the worker; null if unknown.")

    class Meta:
        model = JobLoRA
        fields = ["lora_id", "name", "version", "sha256", "weight", "weight_low", "expert", "deleted", "cost"]

    def get_deleted(self, job_lora: JobLoRA) -> bool:
        return job_lora.lora is None or job_lora.lora.deleted_at is not None

    @extend_schema_field(LoRACostOutput(allow_null=True))
    def get_cost(self, job_lora: JobLoRA) -> dict | None:
        return selectors.job_lora_cost(job_lora=job_lora)


class JobOutput(serializers.ModelSerializer):
    model = serializers.CharField(source="model_key")
    loras = JobLoRAOutput(source="job_loras", many=True)
    created_by = serializers.CharField(source="created_by.username", default=None)
    output_url = serializers.SerializerMethodField()
    poster_url = serializers.SerializerMethodField()
    thumb_url = serializers.SerializerMethodField(help_text="WebP ≤ 320 px of the output (or its poster), signed.")
    waiting_reason = serializers.SerializerMethodField(
        help_text="For a queued job: why no worker picks it up, e.g. 'No worker serves Wan 2.2 T2V-A14B right now'; "
        "else empty.",
    )
    rating = serializers.SerializerMethodField(help_text="The output's stars: yours, the average and the count.")
    provenance = serializers.SerializerMethodField(
        help_text="What the output's PNG text chunks / MP4 comment carry: model, prompts, params and each LoRA's "
        "name, version, AutoV2, sha256, expert and weight(s) (weight_low when it has one)."
    )

    class Meta:
        model = GenerationJob
        fields = [
            "id",
            "model",
            "model_name",
            "kind",
            "prompt",
            "negative_prompt",
            "params",
            "loras",
            "status",
            "progress",
            "current_step",
            "total_steps",
            "error",
            "waiting_reason",
            "provenance",
            "rating",
            "timings",
            "attempts",
            "output_url",
            "poster_url",
            "thumb_url",
            "purpose",
            "retry_of",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def _urls(self, job: GenerationJob) -> dict:
        cache = self.context.setdefault("_urls", {})
        if job.id not in cache:
            cache[job.id] = selectors.job_output_urls(job=job)
        return cache[job.id]

    def _absolute(self, url: str | None) -> str | None:
        request = self.context.get("request")
        return request.build_absolute_uri(url) if url and request and not url.startswith("http") else url

    def get_waiting_reason(self, job: GenerationJob) -> str:
        if job.status != JobStatus.QUEUED:
            return ""
        if "_served" not in self.context:  # once per response, however many jobs it lists
            self.context["_served"] = worker_registry.models_served()
        return selectors.job_waiting_reason(job=job, served=self.context["_served"])

    @extend_schema_field(RatingOutput)
    def get_rating(self, job: GenerationJob) -> dict:
        if "_ratings" not in self.context:  # one query per response: a list reads its whole page at once
            jobs = self.parent.instance if isinstance(self.parent, serializers.ListSerializer) else [job]
            self.context["_ratings"] = rating_summaries(job_ids=[j.id for j in jobs], user=self.context["request"].user)
        return RatingOutput(self.context["_ratings"].get(job.id, NO_RATINGS)).data

    @extend_schema_field(serializers.DictField())
    def get_provenance(self, job: GenerationJob) -> dict:
        return job_provenance(job)

    def get_output_url(self, job: GenerationJob) -> str | None:
        return self._absolute(self._urls(job)["output_url"])

    def get_poster_url(self, job: GenerationJob) -> str | None:
        return self._absolute(self._urls(job)["poster_url"])

    def get_thumb_url(self, job: GenerationJob) -> str | None:
        return self._absolute(self._urls(job)["thumb_url"])


class ParamsInput(serializers.Serializer):
    width = serializers.IntegerField(required=False, min_value=1)
    height = serializers.IntegerField(required=False, min_value=1)
    num_frames = serializers.IntegerField(required=False, min_value=1)
    steps = serializers.IntegerField(required=False, min_value=1)
    guidance = serializers.FloatField(required=False)
    guidance_2 = serializers.FloatField(required=False)
    seed = serializers.IntegerField(required=False)
    fps = serializers.IntegerField(required=False, min_value=1)
    image = serializers.IntegerField(required=False, help_text="An input image's id (POST …/generations/inputs/).")
    image_fit = serializers.CharField(required=False, help_text="fit, fill or center-crop (default).")


class LoRAEntryInput(serializers.Serializer):
    # Weights are bounded (0–2) by the service, which reports every problem of an entry together.
    lora_id = serializers.IntegerField()
    weight = serializers.FloatField(
        required=False, help_text="0–2; default: the LoRA's preferred weight. With weight_low: the high-noise weight."
    )
    expert = serializers.ChoiceField(choices=Expert.choices, required=False)
    weight_low = serializers.FloatField(
        required=False, help_text="0–2, expert 'both' only: the low-noise expert's own weight."
    )


class GenerationInput(serializers.Serializer):
    model = serializers.CharField(max_length=64)
    prompt = serializers.CharField(max_length=4000)
    negative_prompt = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    params = ParamsInput(required=False, default=dict)
    loras = LoRAEntryInput(many=True, required=False, default=list)


class GenerationListCreateAPI(WorkspaceScopedAPIView):
    pagination_class = PageNumberPagination

    class FilterInput(serializers.Serializer):
        status = serializers.ChoiceField(choices=JobStatus.choices, required=False)
        lora = serializers.IntegerField(required=False, help_text="Only jobs that used this LoRA id.")
        purpose = serializers.ChoiceField(
            choices=JobPurpose.choices,
            default=JobPurpose.USER,
            help_text="`user` (default) or `preview`: the auto preview jobs, hidden otherwise.",
        )

    @extend_schema(
        parameters=[FilterInput],
        responses={200: JobOutput(many=True), **error_responses(401, 404)},
        tags=["generation"],
    )
    def get(self, request, slug):
        filters = parse_input(self.FilterInput, request.query_params)
        jobs = selectors.job_list(
            workspace=self.membership.workspace,
            status=filters.get("status", ""),
            lora_id=filters.get("lora"),
            purpose=filters["purpose"],
        )
        return paginated(request, self, jobs, JobOutput, request=request)

    @extend_schema(
        request=GenerationInput,
        responses={201: JobOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["generation"],
        summary="Queue a generation with up to 5 LoRAs",
    )
    def post(self, request, slug):
        data = parse_input(GenerationInput, request.data)
        data["loras"] = [services.LoRARequest(**entry) for entry in data["loras"]]
        data["params"] = dict(data["params"])
        job = services.generation_create(actor=self.membership, **data)
        return Response(
            JobOutput(
                selectors.job_get(workspace=self.membership.workspace, job_id=job.id), context={"request": request}
            ).data,
            status=status.HTTP_201_CREATED,
        )


class GenerationDetailAPI(WorkspaceScopedAPIView):
    @extend_schema(responses={200: JobOutput, **error_responses(401, 404)}, tags=["generation"])
    def get(self, request, slug, job_id):
        job = selectors.job_get(workspace=self.membership.workspace, job_id=job_id)
        return Response(JobOutput(job, context={"request": request}).data)

    @extend_schema(
        responses={204: None, **error_responses(401, 403, 404, 409)},
        tags=["generation"],
        summary="Delete a finished job (members their own, admins any); its output is purged after the grace",
    )
    def delete(self, request, slug, job_id):
        services.job_delete(
            actor=self.membership, job=selectors.job_get(workspace=self.membership.workspace, job_id=job_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class GenerationCancelAPI(WorkspaceScopedAPIView):
    @extend_schema(request=None, responses={200: JobOutput, **error_responses(401, 403, 404, 409)}, tags=["generation"])
    def post(self, request, slug, job_id):
        job = services.generation_cancel(
            actor=self.membership, job=selectors.job_get(workspace=self.membership.workspace, job_id=job_id)
        )
        return Response(
            JobOutput(
                selectors.job_get(workspace=self.membership.workspace, job_id=job.id), context={"request": request}
            ).data
        )


class GenerationRetryAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=None, responses={201: JobOutput, **error_responses(400, 401, 403, 404, 409)}, tags=["generation"]
    )
    def post(self, request, slug, job_id):
        job = services.generation_retry(
            actor=self.membership, job=selectors.job_get(workspace=self.membership.workspace, job_id=job_id)
        )
        return Response(
            JobOutput(
                selectors.job_get(workspace=self.membership.workspace, job_id=job.id), context={"request": request}
            ).data,
            status=status.HTTP_201_CREATED,
        )


class ProvenanceInput(serializers.Serializer):
    file = serializers.FileField(help_text="An output image (PNG) with lorasite's or A1111's text chunks; ≤ 32 MiB.")


class ProvenanceLoRAOutput(serializers.Serializer):
    name = serializers.CharField(help_text="As the file names it.")
    autov2 = serializers.CharField(help_text="As the file gives it ('' when it gives none).")
    sha256 = serializers.CharField()
    expert = serializers.CharField()
    weight = serializers.FloatField(allow_null=True)
    weight_low = serializers.FloatField(required=False)
    lora_id = serializers.IntegerField(allow_null=True, help_text="The workspace's LoRA it matched; null: missing.")
    lora_name = serializers.CharField()
    lora_version = serializers.CharField()
    matched_by = serializers.ChoiceField(
        choices=["sha256", "autov2", "name", ""], help_text="'name': same name, other content; '': not found."
    )


class ProvenanceModelOutput(serializers.Serializer):
    key = serializers.CharField(help_text="This site's model key ('' when the file names an unknown model).")
    name = serializers.CharField()
    available = serializers.BooleanField(help_text="The model is enabled here and its weights are present.")


class ProvenanceOutput(serializers.Serializer):
    source = serializers.ChoiceField(choices=["lorasite", "a1111"], help_text="Which text chunk it was read from.")
    model = ProvenanceModelOutput()
    prompt = serializers.CharField(allow_blank=True)
    negative_prompt = serializers.CharField(allow_blank=True)
    params = serializers.DictField(help_text="width, height, steps, guidance, guidance_2, seed, num_frames, fps.")
    loras = ProvenanceLoRAOutput(many=True)
    missing = serializers.ListField(child=serializers.CharField(), help_text="LoRAs not in this workspace.")
    generate_url = serializers.CharField(help_text="The Generate page with the recipe filled in; '' if no model.")


class ProvenanceAPI(WorkspaceScopedAPIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": ProvenanceInput},
        responses={200: ProvenanceOutput, **error_responses(400, 401, 404, 413)},
        tags=["generation"],
        summary="What made this? Read an output PNG's recipe and match its LoRAs in the workspace",
    )
    def post(self, request, slug):
        data = parse_input(ProvenanceInput, request.data)
        recipe = selectors.provenance_recipe(workspace=self.membership.workspace, upload=data["file"])
        return Response(ProvenanceOutput(recipe).data)


class WorkerAdapterOutput(serializers.Serializer):
    model_key = serializers.CharField()
    tier = serializers.ChoiceField(choices=["merged", "resident", "host_tier"])
    sha256 = serializers.CharField()
    name = serializers.CharField(help_text="A LoRA with this content; empty when none is left.")


class WorkerOutput(serializers.Serializer):
    name = serializers.CharField(help_text="The Celery node name.")
    queue = serializers.CharField(help_text="Its own queue, where jobs routed to it wait.")
    models = serializers.ListField(child=serializers.CharField())
    state = serializers.ChoiceField(choices=["running", "idle"])
    current_job = serializers.CharField()
    backlog = serializers.IntegerField(allow_null=True, help_text="Jobs in its own queue plus the one running.")
    device = serializers.CharField()
    free_memory_bytes = serializers.IntegerField(allow_null=True)
    total_memory_bytes = serializers.IntegerField(allow_null=True)
    pipelines = serializers.ListField(child=serializers.CharField())
    adapters = WorkerAdapterOutput(many=True)
    disk_count = serializers.IntegerField(help_text="LoRA files in its disk cache.")
    cache_bytes = serializers.IntegerField()
    cache_max_bytes = serializers.IntegerField()
    cache_fill = serializers.FloatField()
    counters = serializers.DictField(child=serializers.IntegerField())
    started = serializers.FloatField(help_text="Unix time.")
    last_seen = serializers.FloatField(help_text="Unix time of its last heartbeat.")


class WorkersOutput(serializers.Serializer):
    workers = WorkerOutput(many=True)
    queues = serializers.DictField(
        child=serializers.IntegerField(allow_null=True), help_text="Jobs waiting in each served model's shared queue."
    )
    routing = serializers.BooleanField()
    k = serializers.IntegerField(help_text="Workers each LoRA is placed on.")
    load_factor = serializers.FloatField(
        help_text="A worker takes routed jobs while its backlog is under this times the mean backlog ..."
    )
    backlog_bound = serializers.IntegerField(help_text="... and under this many jobs waiting or running.")


class WorkersAPI(APIView):
    @extend_schema(
        responses={200: WorkersOutput, **error_responses(401, 403, 503)}, tags=["generation"], summary="GPU workers"
    )
    def get(self, request):
        if not request.user.is_staff:
            raise PermissionDenied("Only staff see the GPU workers.")
        overview = worker_selectors.workers_overview()
        if overview is None:
            raise ServiceUnavailable("The worker registry cannot be read right now.", service="worker registry")
        return Response(WorkersOutput(overview).data)
