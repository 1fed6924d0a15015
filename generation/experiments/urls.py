from django.urls import path

from generation.experiments import apis

prefix = "workspaces/<slug:slug>/sweeps/"
ab = "workspaces/<slug:slug>/abtests/"

urlpatterns = [
    path(prefix, apis.SweepListCreateAPI.as_view(), name="sweep-list"),
    path(prefix + "<int:sweep_id>/", apis.SweepDetailAPI.as_view(), name="sweep-detail"),
    path(prefix + "<int:sweep_id>/cancel/", apis.SweepCancelAPI.as_view(), name="sweep-cancel"),
    path(prefix + "<int:sweep_id>/contact-sheet/", apis.SweepContactSheetAPI.as_view(), name="sweep-contact-sheet"),
    path(ab, apis.ABTestListCreateAPI.as_view(), name="abtest-list"),
    path(ab + "<int:test_id>/", apis.ABTestDetailAPI.as_view(), name="abtest-detail"),
    path(ab + "<int:test_id>/pairs/", apis.ABTestPairsAPI.as_view(), name="abtest-pairs"),
    path(ab + "<int:test_id>/pairs/<int:pair_id>/vote/", apis.ABVoteAPI.as_view(), name="abtest-vote"),
]
