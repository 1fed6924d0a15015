from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from lorasite.api import JSONParser, error_responses, paginated, parse_input
from lorasite.pagination import PageNumberPagination
from lorasite.throttles import FailOpenScopedRateThrottle
from workspaces import selectors, services
from workspaces.models import Membership, Role, Workspace
from workspaces.scoping import WorkspaceScopedAPIView


class TokenObtainAPI(ObtainAuthToken):
    parser_classes = [FormParser, MultiPartParser, JSONParser]
    throttle_classes = [FailOpenScopedRateThrottle]
    throttle_scope = "auth_token"

    @extend_schema(
        request=inline_serializer(
            "TokenRequest", {"username": serializers.CharField(), "password": serializers.CharField()}
        ),
        responses={
            200: inline_serializer("TokenResponse", {"token": serializers.CharField()}),
            **error_responses(400, 429),
        },
        tags=["auth"],
        summary="Exchange username and password for an API token",
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class WorkspaceOutput(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="The caller's role in this workspace.")

    class Meta:
        model = Workspace
        fields = ["id", "name", "slug", "role", "auto_preview", "created_at", "updated_at"]

    def get_role(self, workspace: Workspace) -> str:
        return self.context["roles"][workspace.id]


class MembershipOutput(serializers.ModelSerializer):
    user_id = serializers.IntegerField(source="user.id")
    username = serializers.CharField(source="user.username")
    email = serializers.EmailField(source="user.email")

    class Meta:
        model = Membership
        fields = ["user_id", "username", "email", "role", "created_at"]


class WorkspaceCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    slug = serializers.SlugField(max_length=50, required=False)


class WorkspaceListCreateAPI(APIView):
    pagination_class = PageNumberPagination

    @extend_schema(responses={200: WorkspaceOutput(many=True), **error_responses(401)}, tags=["workspaces"])
    def get(self, request):
        roles = dict(Membership.objects.filter(user=request.user).values_list("workspace_id", "role"))
        return paginated(
            request, self, selectors.workspace_list_for_user(user=request.user), WorkspaceOutput, roles=roles
        )

    @extend_schema(
        request=WorkspaceCreateInput,
        responses={201: WorkspaceOutput, **error_responses(400, 401, 409)},
        tags=["workspaces"],
    )
    def post(self, request):
        workspace = services.workspace_create(creator=request.user, **parse_input(WorkspaceCreateInput, request.data))
        return Response(
            WorkspaceOutput(workspace, context={"roles": {workspace.id: Role.OWNER}}).data,
            status=status.HTTP_201_CREATED,
        )


class WorkspaceUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    slug = serializers.SlugField(max_length=50, required=False)
    auto_preview = serializers.BooleanField(
        required=False, help_text="Queue a low-cost preview job for each LoRA that becomes ready."
    )


class WorkspaceDetailAPI(WorkspaceScopedAPIView):
    def _output(self, workspace: Workspace) -> dict:
        return WorkspaceOutput(workspace, context={"roles": {workspace.id: self.membership.role}}).data

    @extend_schema(responses={200: WorkspaceOutput, **error_responses(401, 404)}, tags=["workspaces"])
    def get(self, request, slug):
        return Response(self._output(self.membership.workspace))

    @extend_schema(
        request=WorkspaceUpdateInput,
        responses={200: WorkspaceOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["workspaces"],
    )
    def patch(self, request, slug):
        data = parse_input(WorkspaceUpdateInput, request.data, partial=True)
        return Response(self._output(services.workspace_update(actor=self.membership, **data)))

    @extend_schema(responses={204: None, **error_responses(401, 403, 404)}, tags=["workspaces"])
    def delete(self, request, slug):
        services.workspace_delete(actor=self.membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberAddInput(serializers.Serializer):
    user = serializers.CharField(max_length=254, help_text="Username or email of an existing user.")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class MemberListCreateAPI(WorkspaceScopedAPIView):
    pagination_class = PageNumberPagination

    @extend_schema(responses={200: MembershipOutput(many=True), **error_responses(401, 404)}, tags=["members"])
    def get(self, request, slug):
        return paginated(
            request, self, selectors.membership_list(workspace=self.membership.workspace), MembershipOutput
        )

    @extend_schema(
        request=MemberAddInput,
        responses={201: MembershipOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["members"],
    )
    def post(self, request, slug):
        membership = services.membership_add(actor=self.membership, **parse_input(MemberAddInput, request.data))
        return Response(MembershipOutput(membership).data, status=status.HTTP_201_CREATED)


class MemberRoleInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MemberDetailAPI(WorkspaceScopedAPIView):
    def _target(self, user_id: int) -> Membership:
        return selectors.membership_get(workspace=self.membership.workspace, user_id=user_id)

    @extend_schema(
        request=MemberRoleInput,
        responses={200: MembershipOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["members"],
    )
    def patch(self, request, slug, user_id):
        data = parse_input(MemberRoleInput, request.data)
        membership = services.membership_change_role(actor=self.membership, target=self._target(user_id), **data)
        return Response(MembershipOutput(membership).data)

    @extend_schema(responses={204: None, **error_responses(401, 403, 404, 409)}, tags=["members"])
    def delete(self, request, slug, user_id):
        services.membership_remove(actor=self.membership, target=self._target(user_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
