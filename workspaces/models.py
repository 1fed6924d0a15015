from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


# Higher rank means more rights; permission checks compare ranks rather than listing roles.
ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Workspace(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="workspaces")
    storage_quota_bytes = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Bytes of LoRAs + job outputs allowed; empty: LORASITE_WORKSPACE_QUOTA_BYTES; 0: no limit.",
    )
    auto_preview = models.BooleanField(
        default=True, help_text="Queue a low-cost preview job when a LoRA becomes ready (loras/previews.py)."
    )

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="membership_unique_per_user")]
        ordering = ["workspace_id", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.workspace.slug}"

    def has_role(self, minimum: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(minimum)]


class StoragePurge(models.Model):
    """Objects under `prefix` whose rows are gone (a deleted workspace or job), deleted by beat once `purge_after`
    has passed: the same grace as soft-deleted LoRAs (LORASITE_PURGE_AFTER_DAYS)."""

    prefix = models.CharField(max_length=500, help_text="Ends with '/': a workspace's or a job's folder.")
    reason = models.CharField(max_length=200)
    purge_after = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["purge_after", "id"]

    def __str__(self) -> str:
        return f"{self.prefix} after {self.purge_after:%Y-%m-%d %H:%M} ({self.reason})"
