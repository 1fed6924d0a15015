from django.urls import path

from generation.ratings import pages

# Included in the "studio" namespace (generation/page_urls.py): studio:job-rating.
urlpatterns = [
    path("w/<slug:slug>/jobs/<uuid:job_id>/rating/", pages.job_rating, name="job-rating"),
]
