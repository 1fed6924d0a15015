"""Server-rendered pages for workspaces: the home page (switcher), create, settings (rename, delete) and members."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from lorasite.errors import ApplicationError
from lorasite.forms import show_service_error
from workspaces import selectors, services
from workspaces.forms import MemberAddForm, MemberRoleForm, WorkspaceDeleteForm, WorkspaceForm, WorkspaceRenameForm
from workspaces.models import Membership, Role


@login_required
def home(request: HttpRequest) -> HttpResponse:
    workspaces = selectors.workspace_list_for_user(user=request.user)
    return render(request, "workspaces/home.html", {"workspaces": workspaces, "form": WorkspaceForm()})


@login_required
@require_POST
def workspace_create(request: HttpRequest) -> HttpResponse:
    form = WorkspaceForm(request.POST)
    if form.is_valid():
        try:
            workspace = services.workspace_create(creator=request.user, **form.cleaned_data)
        except ApplicationError as error:
            show_service_error(form, error)
        else:
            messages.success(request, f"Workspace “{workspace.name}” created.")
            return redirect("dashboard:workspace", slug=workspace.slug)
    workspaces = selectors.workspace_list_for_user(user=request.user)
    return render(request, "workspaces/home.html", {"workspaces": workspaces, "form": form}, status=400)


@login_required
def workspace_detail(request: HttpRequest, slug: str) -> HttpResponse:
    selectors.membership_for_user(user=request.user, slug=slug)  # 404 for non-members
    return redirect("library:list", slug=slug)


def _settings_page(
    request: HttpRequest,
    membership: Membership,
    *,
    rename_form: WorkspaceRenameForm | None = None,
    delete_form: WorkspaceDeleteForm | None = None,
    status: int = 200,
) -> HttpResponse:
    workspace = membership.workspace
    context = {
        "membership": membership,
        "workspace": workspace,
        "rename_form": rename_form or WorkspaceRenameForm(initial={"name": workspace.name, "slug": workspace.slug}),
        "delete_form": delete_form or WorkspaceDeleteForm(workspace_name=workspace.name),
        "can_rename": selectors.workspace_can_rename(actor=membership),
        "can_delete": selectors.workspace_can_delete(actor=membership),
        "purge_after_days": settings.LORASITE_PURGE_AFTER_DAYS,
    }
    return render(request, "workspaces/settings.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def workspace_settings(request: HttpRequest, slug: str) -> HttpResponse:
    """GET shows the workspace's name and slug; POST renames it (name and slug)."""
    membership = selectors.membership_for_user(user=request.user, slug=slug)
    if request.method == "GET":
        return _settings_page(request, membership)
    form = WorkspaceRenameForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            workspace = services.workspace_update(actor=membership, **form.cleaned_data)
        except ApplicationError as error:
            show_service_error(form, error)
            status = error.status_code
        else:
            messages.success(request, f"Workspace renamed to “{workspace.name}” (/w/{workspace.slug}/).")
            return redirect("dashboard:settings", slug=workspace.slug)
    return _settings_page(request, membership, rename_form=form, status=status)


@login_required
@require_POST
def workspace_delete(request: HttpRequest, slug: str) -> HttpResponse:
    membership = selectors.membership_for_user(user=request.user, slug=slug)
    name = membership.workspace.name
    form = WorkspaceDeleteForm(request.POST, workspace_name=name)
    status = 400
    if form.is_valid():
        try:
            services.workspace_delete(actor=membership)
        except ApplicationError as error:
            show_service_error(form, error)
            status = error.status_code
        else:
            messages.success(request, f"Workspace “{name}” deleted.")
            return redirect("dashboard:home")
    return _settings_page(request, membership, delete_form=form, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, slug: str) -> HttpResponse:
    membership = selectors.membership_for_user(user=request.user, slug=slug)
    form = MemberAddForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                added = services.membership_add(actor=membership, **form.cleaned_data)
            except ApplicationError as error:
                show_service_error(form, error)
            else:
                messages.success(request, f"{added.user.username} added as {added.role}.")
                return redirect("dashboard:members", slug=slug)
        status = 400
    context = {
        "membership": membership,
        "workspace": membership.workspace,
        "memberships": selectors.membership_list(workspace=membership.workspace),
        "form": form,
        "roles": Role.choices,
        "can_manage": membership.has_role(Role.ADMIN),
        # The member whose remove (or leave) confirmation is shown open: the no-JavaScript way to the dialog.
        "confirm_remove": _int_or_none(request.GET.get("remove")),
    }
    return render(request, "workspaces/members.html", context, status=status)


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdecimal() else None


@login_required
@require_POST
def member_update(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    membership = selectors.membership_for_user(user=request.user, slug=slug)
    target = selectors.membership_get(workspace=membership.workspace, user_id=user_id)
    try:
        if request.POST.get("action") == "remove":
            services.membership_remove(actor=membership, target=target)
            messages.success(request, f"{target.user.username} removed.")
            if target.id == membership.id:
                return redirect("dashboard:home")
        else:
            form = MemberRoleForm(request.POST)
            if not form.is_valid():
                messages.error(request, "Choose one of the roles: owner, admin, member, viewer.")
                return redirect("dashboard:members", slug=slug)
            services.membership_change_role(actor=membership, target=target, role=form.cleaned_data["role"])
            messages.success(request, f"{target.user.username} is now {form.cleaned_data['role']}.")
    except ApplicationError as error:
        messages.error(request, error.message)
    return redirect("dashboard:members", slug=slug)
