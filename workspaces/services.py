"""Writes for workspaces and memberships. Role rules live here, not in views."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from lorasite.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from lorasite.validators import refuse_bidi_controls
from workspaces.models import Membership, Role, StoragePurge, Workspace

SLUG_MAX_LENGTH = Workspace._meta.get_field("slug").max_length


def require_role(*, membership: Membership, minimum: str, action: str) -> None:
    if not membership.has_role(minimum):
        raise PermissionDenied(f"Only a workspace {minimum} or above can {action}; your role is {membership.role}.")


def _unique_slug(base: str) -> str:
    base = (slugify(base) or "workspace")[: SLUG_MAX_LENGTH - 4].strip("-") or "workspace"
    candidate, counter = base, 2
    while Workspace.objects.filter(slug=candidate).exists():
        candidate, counter = f"{base}-{counter}", counter + 1
    return candidate


def _check_slug_free(slug: str, *, exclude_id: int | None = None) -> None:
    taken = Workspace.objects.filter(slug=slug).exclude(id=exclude_id).exists()
    if taken:
        raise Conflict(f"The slug '{slug}' is already taken.", errors={"slug": ["This slug is already taken."]})


@transaction.atomic
def workspace_create(*, creator: AbstractBaseUser, name: str, slug: str = "") -> Workspace:
    """Create a workspace; its creator becomes its owner. Without a slug one is derived from the name."""
    refuse_bidi_controls(name, field="name")
    if slug:
        _check_slug_free(slug)
    else:
        slug = _unique_slug(name)
    workspace = Workspace(name=name.strip(), slug=slug)
    workspace.full_clean()
    workspace.save()
    membership = Membership(workspace=workspace, user=creator, role=Role.OWNER)
    membership.full_clean(validate_unique=False)
    membership.save()
    return workspace


@transaction.atomic
def workspace_update(
    *, actor: Membership, name: str | None = None, slug: str | None = None, auto_preview: bool | None = None
) -> Workspace:
    require_role(membership=actor, minimum=Role.ADMIN, action="change the workspace")
    workspace = Workspace.objects.select_for_update().get(id=actor.workspace_id)
    if name is not None:
        refuse_bidi_controls(name, field="name")
        workspace.name = name.strip()
    if slug is not None and slug != workspace.slug:
        _check_slug_free(slug, exclude_id=workspace.id)
        workspace.slug = slug
    if auto_preview is not None:
        workspace.auto_preview = auto_preview
    workspace.full_clean(validate_unique=False)
    workspace.save()
    return workspace


def workspace_storage_prefix(workspace_id: int) -> str:
    """Every object of a workspace (its LoRAs and its jobs' outputs) lies under this prefix."""
    return f"workspaces/{workspace_id}/"


def storage_purge_schedule(*, prefix: str, reason: str) -> StoragePurge:
    """The objects under `prefix` outlived their rows: beat deletes them after LORASITE_PURGE_AFTER_DAYS, the same
    grace soft-deleted LoRAs get."""
    purge = StoragePurge(
        prefix=prefix,
        reason=reason[:200],
        purge_after=timezone.now() + timedelta(days=settings.LORASITE_PURGE_AFTER_DAYS),
    )
    purge.full_clean()
    purge.save()
    return purge


def storage_purge_due(*, now=None) -> int:
    """Beat: delete the objects of every purge whose grace has passed; the number of objects deleted. A purge row
    goes once its objects are gone, so a storage error leaves it for the next run."""
    from lorasite.object_store import get_object_store

    now = now or timezone.now()
    store = get_object_store()
    deleted = 0
    for purge in StoragePurge.objects.filter(purge_after__lte=now):
        for stored in list(store.list(purge.prefix)):
            store.delete(stored.key)
            deleted += 1
        purge.delete()
    return deleted


def storage_purge_pending_prefixes() -> tuple[str, ...]:
    """Prefixes whose objects wait for their purge (orphan cleanup leaves them to it)."""
    return tuple(StoragePurge.objects.values_list("prefix", flat=True))


@transaction.atomic
def workspace_delete(*, actor: Membership) -> None:
    """The rows go at once; the objects (LoRAs, outputs, posters) after the purge grace."""
    require_role(membership=actor, minimum=Role.OWNER, action="delete the workspace")
    storage_purge_schedule(
        prefix=workspace_storage_prefix(actor.workspace_id), reason=f"workspace '{actor.workspace.slug}' deleted"
    )
    Workspace.objects.filter(id=actor.workspace_id).delete()


def _find_user(identifier: str) -> AbstractBaseUser:
    User = get_user_model()
    identifier = identifier.strip()
    matches = list(
        User.objects.filter(Q(username__iexact=identifier) | Q(email__iexact=identifier), is_active=True)[:2]
    )
    if not identifier or not matches:
        raise InvalidInput(
            f"No user with the username or email '{identifier}'.",
            errors={"user": ["No user with this username or email."]},
        )
    if len(matches) > 1:
        # Two accounts can share an email address; the username is unambiguous.
        raise InvalidInput(
            f"More than one user matches '{identifier}'; use the username.",
            errors={"user": ["More than one user matches; use the username."]},
        )
    return matches[0]


def _check_grant(*, actor: Membership, role: str) -> None:
    if role not in Role.values:
        raise InvalidInput(
            f"Unknown role '{role}'; use one of {', '.join(Role.values)}.",
            errors={"role": [f"Unknown role; use one of {', '.join(Role.values)}."]},
        )
    if role == Role.OWNER and actor.role != Role.OWNER:
        raise PermissionDenied("Only an owner can make someone an owner.")


def _owner_count(workspace_id: int) -> int:
    # Lock the owner rows so that two concurrent demotions cannot both pass the last-owner check.
    return len(list(Membership.objects.select_for_update().filter(workspace_id=workspace_id, role=Role.OWNER)))


def _check_not_last_owner(target: Membership, *, action: str) -> None:
    if target.role == Role.OWNER and _owner_count(target.workspace_id) <= 1:
        raise Conflict(
            f"{target.user.get_username()} is the last owner and cannot {action}; make someone else an owner first."
        )


@transaction.atomic
def membership_add(*, actor: Membership, user: str, role: str = Role.MEMBER) -> Membership:
    require_role(membership=actor, minimum=Role.ADMIN, action="add members")
    _check_grant(actor=actor, role=role)
    new_user = _find_user(user)
    if Membership.objects.filter(workspace_id=actor.workspace_id, user=new_user).exists():
        raise Conflict(
            f"{new_user.get_username()} is already a member of this workspace.",
            errors={"user": ["Already a member."]},
        )
    membership = Membership(workspace_id=actor.workspace_id, user=new_user, role=role)
    membership.full_clean()
    membership.save()
    return membership


@transaction.atomic
def membership_change_role(*, actor: Membership, target: Membership, role: str) -> Membership:
    require_role(membership=actor, minimum=Role.ADMIN, action="change roles")
    _check_grant(actor=actor, role=role)
    if target.role == Role.OWNER and actor.role != Role.OWNER:
        raise PermissionDenied("Only an owner can change another owner's role.")
    if role != Role.OWNER:
        _check_not_last_owner(target, action="be demoted")
    target.role = role
    target.full_clean(validate_unique=False)
    target.save(update_fields=["role"])
    return target


@transaction.atomic
def membership_remove(*, actor: Membership, target: Membership) -> None:
    """Admins and owners remove members; anyone may leave. The last owner can do neither."""
    leaving = actor.id == target.id
    if not leaving:
        require_role(membership=actor, minimum=Role.ADMIN, action="remove members")
        if target.role == Role.OWNER and actor.role != Role.OWNER:
            raise PermissionDenied("Only an owner can remove another owner.")
    _check_not_last_owner(target, action="leave the workspace" if leaving else "be removed")
    deleted, _ = Membership.objects.filter(id=target.id).delete()
    if not deleted:
        raise NotFound("Member not found in this workspace.")
