"""Recipe pages: the workspace's list, one recipe (edit, delete, apply), and "Save as recipe" from the Generate
page and from a job's page. Every lookup starts from the caller's membership: another workspace's is a 404."""

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from generation import selectors as job_selectors
from generation.forms import GenerateForm, model_for
from generation.recipes import selectors, services
from generation.recipes.forms import RecipeForm
from lorasite.errors import ApplicationError
from workspaces.models import Membership, Role
from workspaces.selectors import membership_for_user


def _require_writer(membership: Membership) -> None:
    # The services enforce the rule as well; checking first turns a refusal into a plain 403 page.
    if not membership.has_role(Role.MEMBER):
        raise PermissionDenied


def _context(membership: Membership, **extra) -> dict:
    return {
        "membership": membership,
        "workspace": membership.workspace,
        "can_edit": membership.has_role(Role.MEMBER),
        **extra,
    }


@login_required
@require_GET
def recipe_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    recipes = selectors.recipe_list(workspace=membership.workspace)
    return render(request, "generation/recipes/list.html", _context(membership, recipes=recipes))


@login_required
@require_http_methods(["GET", "POST"])
def recipe_detail(request: HttpRequest, slug: str, recipe_id: int) -> HttpResponse:
    """GET: the recipe and, for editors, its edit form. POST: save it with `recipe_update`; errors, the
    service's included, are shown next to their inputs (400)."""
    membership = membership_for_user(user=request.user, slug=slug)
    recipe = selectors.recipe_get(workspace=membership.workspace, recipe_id=recipe_id)
    form = RecipeForm(request.POST if request.method == "POST" else None, recipe=recipe)
    status = 200
    if request.method == "POST":
        _require_writer(membership)
        status = 400
        if form.is_valid():
            try:
                services.recipe_update(actor=membership, recipe=recipe, **form.service_arguments())
            except ApplicationError as error:
                form.add_service_error(error)
                status = error.status_code
            else:
                messages.success(request, "Recipe saved.")
                return redirect("studio:recipe", slug=slug, recipe_id=recipe.id)
    context = _context(membership, recipe=recipe, form=form, problems=selectors.recipe_problems(recipe))
    return render(request, "generation/recipes/detail.html", context, status=status)


@login_required
@require_GET
def recipe_apply(request: HttpRequest, slug: str, recipe_id: int) -> HttpResponse:
    """To the Generate page filled from the recipe, or back to the recipe saying what must be fixed first."""
    membership = membership_for_user(user=request.user, slug=slug)
    recipe = selectors.recipe_get(workspace=membership.workspace, recipe_id=recipe_id)
    try:
        selectors.recipe_apply(recipe=recipe)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("studio:recipe", slug=slug, recipe_id=recipe.id)
    return redirect(f"{reverse('studio:generate', args=[slug])}?recipe={recipe.id}")


@login_required
@require_POST
def recipe_delete(request: HttpRequest, slug: str, recipe_id: int) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    recipe = selectors.recipe_get(workspace=membership.workspace, recipe_id=recipe_id)
    _require_writer(membership)
    services.recipe_delete(actor=membership, recipe=recipe)
    messages.success(request, f"Recipe “{recipe.name}” was deleted.")
    return redirect("studio:recipes", slug=slug)


def _saved(request: HttpRequest, slug: str, recipe) -> HttpResponse:
    messages.success(request, f"Saved as recipe “{recipe.name}”. Rename or adjust it here.")
    return redirect("studio:recipe", slug=slug, recipe_id=recipe.id)


@login_required
@require_POST
def recipe_from_job(request: HttpRequest, slug: str, job_id: UUID) -> HttpResponse:
    membership = membership_for_user(user=request.user, slug=slug)
    job = job_selectors.job_get(workspace=membership.workspace, job_id=job_id)
    _require_writer(membership)
    try:
        recipe = services.recipe_from_job(actor=membership, job=job)
    except ApplicationError as error:
        messages.error(request, f"Could not save a recipe: {error.message}")
        return redirect("studio:job", slug=slug, job_id=job.id)
    return _saved(request, slug, recipe)


@login_required
@require_POST
def recipe_from_generate(request: HttpRequest, slug: str) -> HttpResponse:
    """The Generate form, posted by its "Save as recipe" button: saved as a recipe instead of queued. Errors show
    on the Generate page as a job's would."""
    membership = membership_for_user(user=request.user, slug=slug)
    _require_writer(membership)
    model = model_for(request.POST.get("model"))
    choices = job_selectors.lora_choices(workspace=membership.workspace, model=model)
    form = GenerateForm(request.POST, model=model, choices=choices)
    status = 400
    if form.is_valid():
        job_input = form.job_input()
        try:
            recipe = services.recipe_create(
                actor=membership,
                name=services.recipe_default_name(actor=membership, prompt=job_input["prompt"]),
                model=job_input["model"],
                prompt_template=job_input["prompt"],
                negative_prompt=job_input["negative_prompt"],
                params=job_input["params"],
                loras=job_input["loras"],
            )
        except ApplicationError as error:
            form.add_service_error(error)
            status = error.status_code
        else:
            return _saved(request, slug, recipe)
    context = {
        "membership": membership,
        "workspace": membership.workspace,
        "form": form,
        "model": model,
        "can_run": membership.has_role(Role.MEMBER),
    }
    return render(request, "generation/generate.html", context, status=status)
