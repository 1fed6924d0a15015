"""Display helpers for the recipe pages, each one of generation.recipes.selectors."""

from django import template

from generation.model_registry import model_registry
from generation.models import Recipe
from generation.recipes import selectors

register = template.Library()

register.filter("recipe_problems", selectors.recipe_problems)
register.filter("recipe_model_name", selectors.recipe_model_name)
register.filter("recipe_prompt", selectors.recipe_prompt)
register.filter("recipe_lora_problem", selectors.recipe_lora_problem)


@register.filter
def recipe_two_experts(recipe: Recipe) -> bool:
    model = model_registry().get(recipe.model_key)
    return bool(model and model.two_experts)
