from django.urls import include, path

from generation import apis, input_apis

prefix = "workspaces/<slug:slug>/generations/"

urlpatterns = [
    path("models/", apis.ModelListAPI.as_view(), name="model-list"),
    path("workers/", apis.WorkersAPI.as_view(), name="worker-list"),
    path(prefix, apis.GenerationListCreateAPI.as_view(), name="generation-list"),
    path(prefix + "inputs/", input_apis.GenerationInputCreateAPI.as_view(), name="generation-input-create"),
    path(prefix + "<uuid:job_id>/", apis.GenerationDetailAPI.as_view(), name="generation-detail"),
    path(prefix + "<uuid:job_id>/cancel/", apis.GenerationCancelAPI.as_view(), name="generation-cancel"),
    path(prefix + "<uuid:job_id>/retry/", apis.GenerationRetryAPI.as_view(), name="generation-retry"),
    path("workspaces/<slug:slug>/provenance/", apis.ProvenanceAPI.as_view(), name="provenance"),
    path("", include("generation.recipes.urls")),
    path("", include("generation.ratings.urls")),
    path("", include("generation.experiments.urls")),
]
