"""The recipes API under /api/v1/workspaces/{slug}/recipes/: list, create, read, edit, delete, save from a job
and run. Viewers read; members and above write (the services check the role)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from generation import selectors as job_selectors
from generation.apis import JobOutput, LoRAEntryInput, ParamsInput
from generation.models import Recipe, RecipeLoRA
from generation.recipes import selectors, services
from generation.services import LoRARequest
from lorasite.api import error_responses, paginated, parse_input
from lorasite.pagination import PageNumberPagination
from workspaces.scoping import WorkspaceScopedAPIView


class RecipeLoRAOutput(serializers.ModelSerializer):
    lora_id = serializers.IntegerField(source="lora_ref")
    problem = serializers.SerializerMethodField(help_text="Why it cannot run (deleted, purged, gone); '' otherwise.")

    class Meta:
        model = RecipeLoRA
        fields = ["lora_id", "name", "weight", "weight_low", "expert", "problem"]

    def get_problem(self, recipe_lora: RecipeLoRA) -> str:
        return selectors.recipe_lora_problem(recipe_lora)


class RecipeOutput(serializers.ModelSerializer):
    model = serializers.CharField(source="model_key")
    model_name = serializers.SerializerMethodField()
    prompt = serializers.SerializerMethodField(help_text="The prompt template with {trigger} filled in.")
    loras = RecipeLoRAOutput(source="recipe_loras", many=True)
    problems = serializers.SerializerMethodField(help_text="What keeps it from running until it is edited; [] if none.")
    created_by = serializers.CharField(source="created_by.username", default=None)

    class Meta:
        model = Recipe
        fields = [
            "id",
            "name",
            "model",
            "model_name",
            "prompt_template",
            "prompt",
            "negative_prompt",
            "params",
            "loras",
            "problems",
            "created_by",
            "created_at",
            "updated_at",
        ]

    def get_model_name(self, recipe: Recipe) -> str:
        return selectors.recipe_model_name(recipe)

    def get_prompt(self, recipe: Recipe) -> str:
        return selectors.recipe_prompt(recipe)

    def get_problems(self, recipe: Recipe) -> list[str]:
        return selectors.recipe_problems(recipe)


class RecipeUpdateInput(serializers.Serializer):
    """Every field optional (PATCH); a LoRA entry still needs its `lora_id`, so this is not a `partial` parse,
    which DRF would pass on to the nested entries."""

    name = serializers.CharField(max_length=100, required=False)
    model = serializers.CharField(max_length=64, required=False)
    prompt_template = serializers.CharField(
        max_length=4000, required=False, help_text="{trigger} becomes the LoRAs' trigger words."
    )
    negative_prompt = serializers.CharField(max_length=4000, required=False, allow_blank=True)
    params = ParamsInput(required=False)
    loras = LoRAEntryInput(many=True, required=False, help_text="Replaces the whole list.")

    @staticmethod
    def service_arguments(data: dict) -> dict:
        if "loras" in data:
            data["loras"] = [LoRARequest(**dict(entry)) for entry in data["loras"]]
        if "params" in data:
            data["params"] = dict(data["params"])
        return data


class RecipeInput(RecipeUpdateInput):
    name = serializers.CharField(max_length=100)
    model = serializers.CharField(max_length=64)
    prompt_template = serializers.CharField(max_length=4000, help_text="{trigger} becomes the LoRAs' trigger words.")


def _recipe_response(recipe: Recipe, membership, code: int = status.HTTP_200_OK) -> Response:
    # Read back through the selector: the answer shows the LoRA rows as stored, with their problems.
    return Response(RecipeOutput(selectors.recipe_get(workspace=membership.workspace, recipe_id=recipe.id)).data, code)


class RecipeListCreateAPI(WorkspaceScopedAPIView):
    pagination_class = PageNumberPagination

    @extend_schema(responses={200: RecipeOutput(many=True), **error_responses(401, 404)}, tags=["recipes"])
    def get(self, request, slug):
        return paginated(request, self, selectors.recipe_list(workspace=self.membership.workspace), RecipeOutput)

    @extend_schema(
        request=RecipeInput,
        responses={201: RecipeOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["recipes"],
        summary="Save a recipe (checked like a job: params against the model, every LoRA)",
    )
    def post(self, request, slug):
        data = RecipeInput.service_arguments(parse_input(RecipeInput, request.data))
        recipe = services.recipe_create(actor=self.membership, **data)
        return _recipe_response(recipe, self.membership, status.HTTP_201_CREATED)


class RecipeDetailAPI(WorkspaceScopedAPIView):
    def _recipe(self, recipe_id: int) -> Recipe:
        return selectors.recipe_get(workspace=self.membership.workspace, recipe_id=recipe_id)

    @extend_schema(responses={200: RecipeOutput, **error_responses(401, 404)}, tags=["recipes"])
    def get(self, request, slug, recipe_id):
        return Response(RecipeOutput(self._recipe(recipe_id)).data)

    @extend_schema(
        request=RecipeUpdateInput,
        responses={200: RecipeOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["recipes"],
        summary="Change a recipe; `loras` replaces the whole list",
    )
    def patch(self, request, slug, recipe_id):
        data = RecipeUpdateInput.service_arguments(parse_input(RecipeUpdateInput, request.data))
        recipe = services.recipe_update(actor=self.membership, recipe=self._recipe(recipe_id), **data)
        return _recipe_response(recipe, self.membership)

    @extend_schema(responses={204: None, **error_responses(401, 403, 404)}, tags=["recipes"])
    def delete(self, request, slug, recipe_id):
        services.recipe_delete(actor=self.membership, recipe=self._recipe(recipe_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecipeFromJobInput(serializers.Serializer):
    job_id = serializers.UUIDField()
    name = serializers.CharField(max_length=100, required=False, help_text="Default: the prompt's first words.")


class RecipeFromJobAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=RecipeFromJobInput,
        responses={201: RecipeOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["recipes"],
        summary="Save a finished job's model, prompt, params and LoRAs as a recipe",
    )
    def post(self, request, slug):
        data = parse_input(RecipeFromJobInput, request.data)
        job = job_selectors.job_get(workspace=self.membership.workspace, job_id=data["job_id"])
        recipe = services.recipe_from_job(actor=self.membership, job=job, name=data.get("name", ""))
        return _recipe_response(recipe, self.membership, status.HTTP_201_CREATED)


class RecipeRunInput(serializers.Serializer):
    seed = serializers.IntegerField(required=False, help_text="Replaces the recipe's seed (default: the recipe's).")


class RecipeRunAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=RecipeRunInput,
        responses={201: JobOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["recipes"],
        summary="Queue a job from the recipe (409 naming a deleted LoRA)",
    )
    def post(self, request, slug, recipe_id):
        data = parse_input(RecipeRunInput, request.data)
        recipe = selectors.recipe_get(workspace=self.membership.workspace, recipe_id=recipe_id)
        job = services.recipe_run(actor=self.membership, recipe=recipe, seed=data.get("seed"))
        job = job_selectors.job_get(workspace=self.membership.workspace, job_id=job.id)
        return Response(JobOutput(job, context={"request": request}).data, status=status.HTTP_201_CREATED)
