"""Tags for the shared dashboard layout."""

from django import template

from lorasite.errors import unavailable_service
from workspaces.models import Workspace
from workspaces.quota import workspace_storage_usage
from workspaces.selectors import workspace_list_for_user

register = template.Library()


@register.inclusion_tag("workspaces/_switcher.html", takes_context=True)
def workspace_switcher(context: template.Context, current: Workspace) -> dict:
    """The nav's workspace menu. A tag rather than view context, because every workspace page
    (library, studio, members) shows it and their views should not each have to load the list."""
    return {"current": current, "workspaces": workspace_list_for_user(user=context["request"].user)}


@register.inclusion_tag("workspaces/_storage.html")
def workspace_storage(workspace: Workspace) -> dict:
    """ "12.3 GiB of 50 GiB used" on every workspace page, for the same reason as the switcher. Storage being
    down costs the figure, not the page."""
    try:
        return {"usage": workspace_storage_usage(workspace=workspace)}
    except Exception as error:
        if unavailable_service(error) is None:
            raise
        return {"usage": None}
