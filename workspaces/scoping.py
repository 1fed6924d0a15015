"""The one way API views and pages reach a workspace: through the caller's membership."""

from rest_framework.views import APIView

from workspaces.models import Membership
from workspaces.selectors import membership_for_user


class WorkspaceScopedAPIView(APIView):
    """Base for every endpoint under /api/v1/workspaces/{slug}/: resolves the caller's membership
    (404 when the caller is not a member) before the handler runs."""

    membership: Membership

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        self.membership = membership_for_user(user=request.user, slug=kwargs["slug"])
