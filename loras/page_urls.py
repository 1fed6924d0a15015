from django.urls import path

from loras import pages

app_name = "library"

urlpatterns = [
    path("w/<slug:slug>/loras/", pages.library, name="list"),
    path("w/<slug:slug>/loras/<int:lora_id>/", pages.lora_detail, name="detail"),
]
