"""Included by generation/page_urls.py, so the names are in its `studio` namespace."""

from django.urls import path

from generation.experiments import pages

urlpatterns = [
    path("w/<slug:slug>/sweeps/", pages.sweep_list, name="sweeps"),
    path("w/<slug:slug>/sweeps/new/", pages.sweep_new, name="sweep-new"),
    path("w/<slug:slug>/sweeps/<int:sweep_id>/", pages.sweep_detail, name="sweep"),
    path("w/<slug:slug>/sweeps/<int:sweep_id>/cancel/", pages.sweep_cancel, name="sweep-cancel"),
    path("w/<slug:slug>/sweeps/<int:sweep_id>/contact-sheet/", pages.sweep_contact_sheet, name="sweep-sheet"),
    path("w/<slug:slug>/abtests/", pages.abtest_list, name="abtests"),
    path("w/<slug:slug>/abtests/new/", pages.abtest_new, name="abtest-new"),
    path("w/<slug:slug>/abtests/<int:test_id>/", pages.abtest_detail, name="abtest"),
    path("w/<slug:slug>/abtests/<int:test_id>/vote/", pages.abtest_vote, name="abtest-vote"),
]
