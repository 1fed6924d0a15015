from django.urls import path

from workspaces import pages

app_name = "dashboard"

urlpatterns = [
    path("", pages.home, name="home"),
    path("workspaces/new/", pages.workspace_create, name="workspace-create"),
    path("w/<slug:slug>/", pages.workspace_detail, name="workspace"),
    path("w/<slug:slug>/settings/", pages.workspace_settings, name="settings"),
    path("w/<slug:slug>/delete/", pages.workspace_delete, name="workspace-delete"),
    path("w/<slug:slug>/members/", pages.members, name="members"),
    path("w/<slug:slug>/members/<int:user_id>/", pages.member_update, name="member-update"),
]
