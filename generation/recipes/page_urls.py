"""Included by generation/page_urls.py, so the names are in its `studio` namespace."""

from django.urls import path

from generation.recipes import pages

urlpatterns = [
    path("w/<slug:slug>/recipes/", pages.recipe_list, name="recipes"),
    path("w/<slug:slug>/recipes/new/", pages.recipe_from_generate, name="recipe-from-generate"),
    path("w/<slug:slug>/recipes/from-job/<uuid:job_id>/", pages.recipe_from_job, name="recipe-from-job"),
    path("w/<slug:slug>/recipes/<int:recipe_id>/", pages.recipe_detail, name="recipe"),
    path("w/<slug:slug>/recipes/<int:recipe_id>/apply/", pages.recipe_apply, name="recipe-apply"),
    path("w/<slug:slug>/recipes/<int:recipe_id>/delete/", pages.recipe_delete, name="recipe-delete"),
]
