from django.urls import include, path

from generation import pages

app_name = "studio"

urlpatterns = [
    path("w/<slug:slug>/generate/", pages.generate, name="generate"),
    path("w/<slug:slug>/jobs/", pages.jobs, name="jobs"),
    path("w/<slug:slug>/jobs/<uuid:job_id>/", pages.job_detail, name="job"),
    path("w/<slug:slug>/jobs/<uuid:job_id>/cancel/", pages.job_cancel, name="job-cancel"),
    path("w/<slug:slug>/jobs/<uuid:job_id>/retry/", pages.job_retry, name="job-retry"),
    path("w/<slug:slug>/what-made-this/", pages.what_made_this, name="what-made-this"),
    path("ops/workers/", pages.workers, name="workers"),
    path("", include("generation.recipes.page_urls")),  # studio:recipes, studio:recipe, …
    path("", include("generation.ratings.page_urls")),  # studio:job-rating
    path("", include("generation.experiments.page_urls")),  # studio:sweeps, studio:sweep, …
]
