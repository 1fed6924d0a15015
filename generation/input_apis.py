"""POST /api/v1/workspaces/{slug}/generations/inputs/: upload an input image for an image-to-video job."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from generation import inputs
from generation.models import GenerationInput
from lorasite.api import error_responses, parse_input
from workspaces.scoping import WorkspaceScopedAPIView


class InputImageUpload(serializers.Serializer):
    file = serializers.FileField(help_text="A PNG, JPEG or WebP image (LORASITE_INPUT_IMAGE_MAX_BYTES / _PIXELS).")


class InputImageOutput(serializers.ModelSerializer):
    class Meta:
        model = GenerationInput
        fields = ["id", "width", "height", "content_type", "size", "created_at"]


class GenerationInputCreateAPI(WorkspaceScopedAPIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": InputImageUpload},
        responses={201: InputImageOutput, **error_responses(400, 401, 403, 404, 413)},
        tags=["generation"],
        summary="Upload an input image; pass its id as params.image of an image-to-video job",
    )
    def post(self, request, slug):
        data = parse_input(InputImageUpload, request.data)
        row = inputs.generation_input_create(actor=self.membership, uploaded=data["file"])
        return Response(InputImageOutput(row).data, status=status.HTTP_201_CREATED)
