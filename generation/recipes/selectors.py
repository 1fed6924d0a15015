"""Reads for recipes: the workspace's list, one recipe, what keeps one from running, and what it becomes — the
job input for `generation_create`, or the Generate page's query string."""

import re

from django.db.models import Prefetch, QuerySet
from django.http import QueryDict

from generation.model_registry import model_registry
from generation.models import Recipe, RecipeLoRA
from generation.services import LoRARequest
from lorasite.errors import Conflict, NotFound
from workspaces.models import Workspace

TRIGGER_PLACEHOLDER = "{trigger}"
_PLACEHOLDER_AND_COMMA = re.compile(r"\{trigger\}\s*,\s*|\s*,\s*\{trigger\}|\{trigger\}")


def recipe_list(*, workspace: Workspace) -> QuerySet[Recipe]:
    return (
        Recipe.objects.filter(workspace=workspace)
        .select_related("created_by")
        .prefetch_related(Prefetch("recipe_loras", queryset=RecipeLoRA.objects.select_related("lora")))
    )


def recipe_get(*, workspace: Workspace, recipe_id: int) -> Recipe:
    try:
        return recipe_list(workspace=workspace).get(id=recipe_id)
    except (Recipe.DoesNotExist, ValueError, TypeError):
        raise NotFound("Recipe not found.") from None


def recipe_lora_problem(recipe_lora: RecipeLoRA) -> str:
    """Why this LoRA of a recipe cannot run: gone, deleted or purged; "" when it is there."""
    lora = recipe_lora.lora
    if lora is None:
        return f"LoRA '{recipe_lora.name}' no longer exists"
    if lora.purged_at:
        return f"LoRA '{lora.name}' has been deleted and its file purged"
    if lora.deleted_at:
        return f"LoRA '{lora.name}' has been deleted"
    return ""


def recipe_problems(recipe: Recipe) -> list[str]:
    """What keeps the recipe from running until someone fixes it (edit it to remove or replace the LoRA)."""
    problems = []
    model = model_registry().get(recipe.model_key)
    if model is None or not model.enabled:
        problems.append(f"Model '{recipe.model_key}' is not available here any more")
    problems += [problem for rl in recipe.recipe_loras.all() if (problem := recipe_lora_problem(rl))]
    return problems


def recipe_model_name(recipe: Recipe) -> str:
    model = model_registry().get(recipe.model_key)
    return model.display_name if model else recipe.model_key


def recipe_trigger_words(recipe: Recipe) -> list[str]:
    """The trigger words of the recipe's LoRAs that are still there, in order, each once."""
    words: list[str] = []
    for recipe_lora in recipe.recipe_loras.all():
        if recipe_lora.lora is not None and not recipe_lora.lora.deleted_at:
            words += [word for word in recipe_lora.lora.trigger_words if word not in words]
    return words


def recipe_prompt(recipe: Recipe) -> str:
    """The prompt template with `{trigger}` replaced by the LoRAs' trigger words (comma-separated); with none, the
    placeholder goes with the comma next to it ("{trigger}, a cat" → "a cat")."""
    words = ", ".join(recipe_trigger_words(recipe))
    if words:
        return recipe.prompt_template.replace(TRIGGER_PLACEHOLDER, words).strip()
    return _PLACEHOLDER_AND_COMMA.sub("", recipe.prompt_template).strip()


def _require_runnable(recipe: Recipe) -> None:
    problems = recipe_problems(recipe)
    if problems:
        raise Conflict(
            f"Recipe '{recipe.name}' cannot run until it is fixed: {'; '.join(problems)}.",
            errors={"loras": problems},
        )


def recipe_job_input(*, recipe: Recipe) -> dict:
    """The keyword arguments of `generation_create` for this recipe; Conflict naming what is missing."""
    _require_runnable(recipe)
    return {
        "model": recipe.model_key,
        "prompt": recipe_prompt(recipe),
        "negative_prompt": recipe.negative_prompt,
        "params": dict(recipe.params),
        "loras": [
            LoRARequest(lora_id=rl.lora_ref, weight=rl.weight, expert=rl.expert or None, weight_low=rl.weight_low)
            for rl in recipe.recipe_loras.all()
        ],
    }


def _form_query(recipe: Recipe) -> QueryDict:
    query = QueryDict(mutable=True)
    query.update({"model": recipe.model_key, "prompt": recipe_prompt(recipe)})
    query["negative_prompt"] = recipe.negative_prompt
    params = recipe.params
    if params.get("width") and params.get("height"):
        query["resolution"] = f"{params['width']}x{params['height']}"
    for name in ("num_frames", "fps", "steps", "guidance", "guidance_2", "seed"):
        if params.get(name) is not None:
            query[name] = str(params[name])
    for rl in recipe.recipe_loras.all():
        # A LoRA on both experts is a row in each section, the way the Generate form posts it.
        rows = [("high", rl.weight), ("low", rl.weight_low)] if rl.expert == "both" else [(rl.expert, rl.weight)]
        for expert, weight in rows:
            query.appendlist("lora_id", str(rl.lora_ref))
            query.appendlist("lora_weight", f"{rl.weight if weight is None else weight:.2f}")
            query.appendlist("lora_expert", expert)
    return query


def recipe_apply(*, recipe: Recipe) -> QueryDict:
    """The Generate form's initial data as a query string (model, prompts, params, one row per LoRA and expert);
    Conflict naming what is missing when the recipe cannot run."""
    _require_runnable(recipe)
    return _form_query(recipe)


def recipe_generate_query(*, workspace: Workspace, query: QueryDict) -> QueryDict:
    """For the Generate page: `?recipe=<id>` becomes that recipe's form data (404 for another workspace's); any
    other query string is returned as it is. The recipe page's Apply refuses a recipe that cannot run; one opened
    by URL anyway pre-fills all the same, and Generate names the missing LoRA when it is submitted."""
    if not query.get("recipe"):
        return query
    return _form_query(recipe_get(workspace=workspace, recipe_id=query["recipe"]))
