from django.urls import path

from generation.ratings import apis

prefix = "workspaces/<slug:slug>/generations/<uuid:job_id>/"

urlpatterns = [
    path(prefix + "rating/", apis.RatingAPI.as_view(), name="generation-rating"),
]
