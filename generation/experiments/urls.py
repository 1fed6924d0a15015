from django.urls import path

from generation.experiments import apis

prefix = "workspaces/<slug:slug>/sweeps/"

urlpatterns = [
    path(prefix, apis.SweepListCreateAPI.as_view(), name="sweep-list"),
    path(prefix + "<int:sweep_id>/", apis.SweepDetailAPI.as_view(), name="sweep-detail"),
    path(prefix + "<int:sweep_id>/cancel/", apis.SweepCancelAPI.as_view(), name="sweep-cancel"),
    path(prefix + "<int:sweep_id>/contact-sheet/", apis.SweepContactSheetAPI.as_view(), name="sweep-contact-sheet"),
]
