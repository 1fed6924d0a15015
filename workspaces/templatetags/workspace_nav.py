"""Tags for the shared dashboard layout."""

from django import template

from workspaces.models import Workspace
from workspaces.selectors import workspace_list_for_user

register = template.Library()


@register.inclusion_tag("workspaces/_switcher.html", takes_context=True)
def workspace_switcher(context: template.Context, current: Workspace) -> dict:
    """The nav's workspace menu. A tag rather than view context, because every workspace page
    (library, studio, members) shows it and their views should not each have to load the list."""
    return {"current": current, "workspaces": workspace_list_for_user(user=context["request"].user)}
