from django.urls import path

from workspaces import apis

urlpatterns = [
    path("workspaces/", apis.WorkspaceListCreateAPI.as_view(), name="workspace-list"),
    path("workspaces/<slug:slug>/", apis.WorkspaceDetailAPI.as_view(), name="workspace-detail"),
    path("workspaces/<slug:slug>/members/", apis.MemberListCreateAPI.as_view(), name="member-list"),
    path("workspaces/<slug:slug>/members/<int:user_id>/", apis.MemberDetailAPI.as_view(), name="member-detail"),
]
