"""Reads. Every lookup that starts from user input is scoped to the user's memberships, so an
object in a workspace the user does not belong to is indistinguishable from one that does not exist."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, QuerySet

from lorasite.errors import NotFound
from workspaces.models import Membership, Role, Workspace


def workspace_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Workspace]:
    return (
        Workspace.objects.filter(memberships__user=user)
        .annotate(member_count=Count("memberships", distinct=True))
        .order_by("name", "id")
    )


def membership_for_user(*, user: AbstractBaseUser, slug: str) -> Membership:
    """The caller's membership in workspace `slug`; NotFound when there is none (never 403)."""
    if not user.is_authenticated:
        raise NotFound("Workspace not found.")
    try:
        return Membership.objects.select_related("workspace", "user").get(workspace__slug=slug, user=user)
    except Membership.DoesNotExist:
        raise NotFound("Workspace not found.") from None


def membership_list(*, workspace: Workspace) -> QuerySet[Membership]:
    return Membership.objects.filter(workspace=workspace).select_related("user").order_by("user__username")


def membership_get(*, workspace: Workspace, user_id: int) -> Membership:
    try:
        return Membership.objects.select_related("user", "workspace").get(workspace=workspace, user_id=user_id)
    except Membership.DoesNotExist:
        raise NotFound("Member not found in this workspace.") from None


def workspace_can_rename(*, actor: Membership) -> bool:
    """Whether the settings page offers the rename form; `workspace_update` enforces the same rule."""
    return actor.has_role(Role.ADMIN)


def workspace_can_delete(*, actor: Membership) -> bool:
    """Whether the settings page offers the delete form; `workspace_delete` enforces the same rule."""
    return actor.has_role(Role.OWNER)
