from django.urls import path

from generation.recipes import apis

prefix = "workspaces/<slug:slug>/recipes/"

urlpatterns = [
    path(prefix, apis.RecipeListCreateAPI.as_view(), name="recipe-list"),
    path(prefix + "from-job/", apis.RecipeFromJobAPI.as_view(), name="recipe-from-job"),
    path(prefix + "<int:recipe_id>/", apis.RecipeDetailAPI.as_view(), name="recipe-detail"),
    path(prefix + "<int:recipe_id>/run/", apis.RecipeRunAPI.as_view(), name="recipe-run"),
]
