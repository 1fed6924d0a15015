"""GET /api/v1/workspaces/{slug}/loras/compare/?ids=1,2 — LoRAs side by side (loras/comparison.py)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from generation.experiments import stats
from loras import comparison
from loras.apis import TrainingHeadlineOutput, UsageFiguresOutput
from lorasite.api import error_responses, parse_input
from workspaces.scoping import WorkspaceScopedAPIView


class CompareInput(serializers.Serializer):
    ids = serializers.CharField(help_text=f"2 to {comparison.MAX_COMPARED} LoRA ids, comma-separated: 12,15.")

    def validate_ids(self, value: str) -> list[int]:
        try:
            return [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise serializers.ValidationError("Comma-separated LoRA ids, e.g. 12,15.") from None


class VerdictOutput(serializers.Serializer):
    text = serializers.CharField(help_text='"Significantly lower (p = 0.012)", "Not enough ratings yet …"')
    significant = serializers.BooleanField()
    p = serializers.FloatField(allow_null=True)


class ComparedOutput(serializers.Serializer):
    id = serializers.IntegerField(source="lora.id")
    name = serializers.CharField(source="lora.name")
    version = serializers.CharField(source="lora.version")
    created_at = serializers.DateTimeField(source="lora.created_at")
    file_size = serializers.IntegerField(source="lora.file_size")
    rank = serializers.IntegerField(source="lora.rank", allow_null=True)
    alpha = serializers.FloatField(source="lora.alpha", allow_null=True)
    status = serializers.CharField(source="lora.status")
    training = TrainingHeadlineOutput()
    metrics = UsageFiguresOutput()
    success_rate = serializers.FloatField(allow_null=True, help_text="Succeeded ÷ (succeeded + failed).")
    best_rating = serializers.BooleanField(help_text="The highest average rating (none marked on a tie).")
    best_success = serializers.BooleanField(help_text="The highest success rate (none marked on a tie).")
    verdict = VerdictOutput(allow_null=True, help_text="Ratings against the best-rated LoRA; null for that one.")


class ComparisonOutput(serializers.Serializer):
    test = serializers.CharField()
    alpha = serializers.FloatField()
    min_ratings = serializers.IntegerField(help_text="Below this on either side there is no verdict.")
    loras = ComparedOutput(many=True)


class LoRACompareAPI(WorkspaceScopedAPIView):
    @extend_schema(
        parameters=[CompareInput],
        responses={200: ComparisonOutput, **error_responses(400, 401, 404)},
        tags=["loras"],
        summary="Compare 2–4 LoRAs: metadata, training, metrics, the better marked, a significance verdict on ratings",
    )
    def get(self, request, slug):
        ids = parse_input(CompareInput, request.query_params)["ids"]
        loras = comparison.lora_compare_get(workspace=self.membership.workspace, lora_ids=ids)
        body = {
            "test": comparison.TEST_NAME,
            "alpha": stats.ALPHA,
            "min_ratings": comparison.MIN_RATINGS,
            "loras": comparison.lora_comparison(loras=loras),
        }
        return Response(ComparisonOutput(body).data)
