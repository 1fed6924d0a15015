"""Included by generation/page_urls.py, so the names are in its `studio` namespace."""

from django.urls import path

from generation.experiments import pages

urlpatterns = [
    path("w/<slug:slug>/sweeps/", pages.sweep_list, name="sweeps"),
    path("w/<slug:slug>/sweeps/new/", pages.sweep_new, name="sweep-new"),
    path("w/<slug:slug>/sweeps/<int:sweep_id>/", pages.sweep_detail, name="sweep"),
    path("w/<slug:slug>/sweeps/<int:sweep_id>/cancel/", pages.sweep_cancel, name="sweep-cancel"),
    path("w/<slug:slug>/sweeps/<int:sweep_id>/contact-sheet/", pages.sweep_contact_sheet, name="sweep-sheet"),
]
