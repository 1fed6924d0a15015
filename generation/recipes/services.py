"""Writes for recipes: create, update, delete, save one from a finished job, and run one.

A recipe is checked like a job when it is saved — the model's capabilities for its params, and for each LoRA
everything `generation_create` checks (in the workspace, ready, active, the model's family, its layers fit,
weights 0–2, experts) — with the job service's own checks, so the two never disagree. What can break later is a
LoRA being deleted: the recipe then says so (`selectors.recipe_problems`) and cannot run until it is edited.
Viewers read recipes; members and above write them."""

from django.db import transaction

from generation.model_registry import model_get
from generation.models import GenerationJob, Recipe, RecipeLoRA
from generation.recipes.selectors import recipe_job_input
from generation.scaleout import loras_prefetch
from generation.services import JobProblems, LoRARequest, ResolvedLoRA, generation_create, resolve_loras, resolve_params
from lorasite.errors import Conflict
from lorasite.validators import refuse_bidi_controls
from workspaces.models import Membership, Role
from workspaces.services import require_role

NAME_MAX_LENGTH = 100
# image / image_fit: an image-to-video job's input (generation/inputs.py), checked again when the recipe runs.
PARAM_NAMES = ("width", "height", "num_frames", "fps", "steps", "guidance", "guidance_2", "seed", "image", "image_fit")


def _require_writer(actor: Membership) -> None:
    require_role(membership=actor, minimum=Role.MEMBER, action="change recipes")


def _clean_name(name: str) -> str:
    refuse_bidi_controls(name, field="name")
    return " ".join(name.split())


def _check_name_free(*, workspace_id: int, name: str, exclude_id: int | None = None) -> None:
    if Recipe.objects.filter(workspace_id=workspace_id, name=name).exclude(id=exclude_id).exists():
        raise Conflict(f"A recipe named '{name}' already exists here.", errors={"name": ["This name is taken."]})


def _checked(
    *, actor: Membership, name: str, model: str, prompt_template: str, params: dict, loras: list[LoRARequest]
) -> list[ResolvedLoRA]:
    """Every problem at once, keyed like the job API's (`params.steps`, `loras.1.lora_id`), else the LoRAs."""
    base = model_get(model)
    problems = JobProblems()
    if not name:
        problems.add("name", "A recipe needs a name.")
    elif len(name) > NAME_MAX_LENGTH:
        problems.add("name", f"A name has at most {NAME_MAX_LENGTH} characters; this one has {len(name)}.")
    if not prompt_template.strip():
        problems.add("prompt_template", "A recipe needs a prompt template; {trigger} inserts the trigger words.")
    resolve_params(base, params, problems)
    resolved = resolve_loras(workspace_id=actor.workspace_id, model=base, requests=loras, problems=problems)
    problems.raise_if_any()
    return resolved


def _stored_params(params: dict) -> dict:
    return {name: params[name] for name in PARAM_NAMES if params.get(name) is not None}


def _replace_loras(recipe: Recipe, resolved: list[ResolvedLoRA]) -> None:
    recipe.recipe_loras.all().delete()
    for position, entry in enumerate(resolved):
        recipe_lora = RecipeLoRA(
            recipe=recipe,
            lora=entry.lora,
            lora_ref=entry.lora.id,
            name=entry.lora.name,
            position=position,
            weight=entry.weight,
            weight_low=entry.weight_low,
            expert=entry.expert,
        )
        recipe_lora.full_clean()
        recipe_lora.save()
    loras_prefetch(loras=[entry.lora for entry in resolved])  # its workers fetch them before the recipe runs


@transaction.atomic
def recipe_create(
    *,
    actor: Membership,
    name: str,
    model: str,
    prompt_template: str,
    negative_prompt: str = "",
    params: dict | None = None,
    loras: list[LoRARequest] | None = None,
) -> Recipe:
    _require_writer(actor)
    name = _clean_name(name)
    params = _stored_params(params or {})
    resolved = _checked(
        actor=actor, name=name, model=model, prompt_template=prompt_template, params=params, loras=loras or []
    )
    _check_name_free(workspace_id=actor.workspace_id, name=name)
    recipe = Recipe(
        workspace_id=actor.workspace_id,
        created_by_id=actor.user_id,
        name=name,
        model_key=model,
        prompt_template=prompt_template,
        negative_prompt=negative_prompt,
        params=params,
    )
    recipe.full_clean(validate_constraints=False)
    recipe.save()
    _replace_loras(recipe, resolved)
    return recipe


@transaction.atomic
def recipe_update(
    *,
    actor: Membership,
    recipe: Recipe,
    name: str | None = None,
    model: str | None = None,
    prompt_template: str | None = None,
    negative_prompt: str | None = None,
    params: dict | None = None,
    loras: list[LoRARequest] | None = None,
) -> Recipe:
    """Change any part; what is left out stays. The LoRAs are checked again when they or the model change (a
    rename alone does not need a recipe's LoRAs to be fixed first)."""
    _require_writer(actor)
    recipe = Recipe.objects.select_for_update().get(id=recipe.id)
    name = recipe.name if name is None else _clean_name(name)
    model = recipe.model_key if model is None else model
    stored = _stored_params(recipe.params if params is None else params)
    requests = loras
    if requests is None:
        requests = [
            LoRARequest(lora_id=rl.lora_ref, weight=rl.weight, expert=rl.expert, weight_low=rl.weight_low)
            for rl in recipe.recipe_loras.all()
        ]
    template = recipe.prompt_template if prompt_template is None else prompt_template
    recheck = loras is not None or model != recipe.model_key
    resolved = _checked(
        actor=actor,
        name=name,
        model=model,
        prompt_template=template,
        params=stored,
        loras=requests if recheck else [],
    )
    _check_name_free(workspace_id=recipe.workspace_id, name=name, exclude_id=recipe.id)
    recipe.name, recipe.model_key, recipe.prompt_template, recipe.params = name, model, template, stored
    if negative_prompt is not None:
        recipe.negative_prompt = negative_prompt
    recipe.full_clean(validate_constraints=False)
    recipe.save()
    if recheck:
        _replace_loras(recipe, resolved)
    return recipe


@transaction.atomic
def recipe_delete(*, actor: Membership, recipe: Recipe) -> None:
    """Jobs made from it are not touched: they keep their own snapshot."""
    _require_writer(actor)
    Recipe.objects.filter(id=recipe.id).delete()


def _free_name(*, workspace_id: int, base: str) -> str:
    """`base`, or `base (2)`, `base (3)`… the first one no recipe of the workspace has."""
    base = " ".join(base.split())[: NAME_MAX_LENGTH - 5].strip() or "Recipe"
    taken = set(Recipe.objects.filter(workspace_id=workspace_id, name__startswith=base).values_list("name", flat=True))
    candidate, counter = base, 2
    while candidate in taken:
        candidate, counter = f"{base} ({counter})", counter + 1
    return candidate


def recipe_default_name(*, actor: Membership, prompt: str) -> str:
    """A free name from the first words of a prompt, for "Save as recipe" (renamed on the recipe's page)."""
    return _free_name(workspace_id=actor.workspace_id, base=prompt[:60])


def recipe_from_job(*, actor: Membership, job: GenerationJob, name: str = "") -> Recipe:
    """A recipe with a finished job's model, prompt, params (seed included: it reproduces the job) and LoRAs."""
    if not job.is_finished:
        raise Conflict(f"The job is {job.status}; save it as a recipe once it has finished.")
    loras = [
        LoRARequest(lora_id=jl.lora_ref, weight=jl.weight, expert=jl.expert, weight_low=jl.weight_low)
        for jl in job.job_loras.all()
    ]
    return recipe_create(
        actor=actor,
        name=name or recipe_default_name(actor=actor, prompt=job.prompt),
        model=job.model_key,
        prompt_template=job.prompt,
        negative_prompt=job.negative_prompt,
        params=job.params,
        loras=loras,
    )


def recipe_run(*, actor: Membership, recipe: Recipe, seed: int | None = None) -> GenerationJob:
    """Queue a job from the recipe (Conflict naming a missing LoRA); `seed` replaces the recipe's."""
    job_input = recipe_job_input(recipe=recipe)
    if seed is not None:
        job_input["params"]["seed"] = seed
    return generation_create(actor=actor, **job_input)
