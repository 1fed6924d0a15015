"""The experiments API. Sweeps under /api/v1/workspaces/{slug}/sweeps/: create (or a dry run answering the cost),
list, one sweep with its grid, cancel the whole sweep, and the contact sheet by signed URL. A/B tests under
…/abtests/: create (or dry run), list, results, the blind pairs of the caller and their vote."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from generation.apis import LoRAEntryInput, ParamsInput
from generation.experiments import abtests, selectors, sweeps
from generation.models import ABTest, Sweep, SweepAxisKind
from generation.services import LoRARequest
from lorasite.api import error_responses, paginated, parse_input
from lorasite.object_store import get_object_store
from lorasite.pagination import PageNumberPagination
from workspaces.scoping import WorkspaceScopedAPIView


class AxisInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=SweepAxisKind.choices, default=SweepAxisKind.WEIGHT)
    lora_id = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="The LoRA a weight, weight_low or version axis varies."
    )
    values = serializers.ListField(
        child=serializers.FloatField(),
        required=False,
        max_length=36,
        help_text="Weights 0–2, steps, guidance or (version) LoRA ids; a weight axis defaults to 0, 0.25 … 1.5.",
    )

    def validate(self, data: dict) -> dict:
        values = data.get("values")
        if values is None:
            if data["kind"] != SweepAxisKind.WEIGHT:
                raise serializers.ValidationError({"values": ["This axis needs its values."]})
            values = list(sweeps.DEFAULT_WEIGHTS)
        if data["kind"] in (SweepAxisKind.STEPS, SweepAxisKind.VERSION):
            if any(v != int(v) for v in values):
                raise serializers.ValidationError({"values": ["Whole numbers only on this axis."]})
            values = [int(v) for v in values]
        return {**data, "values": values}

    def axis(self, data: dict) -> sweeps.Axis:
        return sweeps.Axis(kind=data["kind"], values=tuple(data["values"]), lora_id=data["lora_id"])


class SweepInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    model = serializers.CharField(max_length=64)
    prompt = serializers.CharField(max_length=4000)
    negative_prompt = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    params = ParamsInput(
        required=False, default=dict, help_text="Shared by every cell; the seed too (random if left out)."
    )
    loras = LoRAEntryInput(many=True, required=False, default=list)
    x_axis = AxisInput()
    y_axis = AxisInput(required=False, allow_null=True, default=None)
    dry_run = serializers.BooleanField(default=False, help_text="Check everything and answer the cost; queue nothing.")


class SweepCellOutput(serializers.Serializer):
    x = serializers.IntegerField()
    y = serializers.IntegerField()
    job_id = serializers.UUIDField(source="job.id", allow_null=True, default=None)
    status = serializers.CharField()
    progress = serializers.IntegerField(source="job.progress", default=0)
    thumb_url = serializers.CharField(allow_null=True)


class SweepOutput(serializers.Serializer):
    id = serializers.IntegerField(source="sweep.id")
    name = serializers.CharField(source="sweep.name")
    model = serializers.CharField(source="sweep.model_key")
    prompt = serializers.CharField(source="sweep.prompt")
    negative_prompt = serializers.CharField(source="sweep.negative_prompt")
    params = serializers.DictField(source="sweep.params")
    loras = serializers.ListField(source="sweep.loras", child=serializers.DictField())
    x_axis = serializers.DictField(source="sweep.x_axis")
    y_axis = serializers.DictField(source="sweep.y_axis", allow_null=True)
    x_title = serializers.CharField()
    y_title = serializers.CharField()
    x_labels = serializers.ListField(child=serializers.CharField())
    y_labels = serializers.ListField(child=serializers.CharField())
    status = serializers.ChoiceField(choices=["running", "finished", "cancelled"])
    total = serializers.IntegerField(help_text="Cells, i.e. jobs.")
    finished = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    cells = SweepCellOutput(many=True)
    created_by = serializers.CharField(source="sweep.created_by.username", default=None)
    created_at = serializers.DateTimeField(source="sweep.created_at")


class SweepCostOutput(serializers.Serializer):
    dry_run = serializers.BooleanField()
    cells = serializers.IntegerField(help_text="The jobs the sweep would queue.")
    limit = serializers.IntegerField(help_text="LORASITE_SWEEP_MAX_CELLS.")


def _sweep_input(request) -> dict:
    data = parse_input(SweepInput, request.data)
    data["loras"] = [LoRARequest(**entry) for entry in data["loras"]]
    data["params"] = dict(data["params"])
    data["x_axis"] = AxisInput().axis(data["x_axis"])
    data["y_axis"] = AxisInput().axis(data["y_axis"]) if data["y_axis"] else None
    return data


class SweepSummaryOutput(serializers.ModelSerializer):
    model = serializers.CharField(source="model_key")
    total = serializers.IntegerField(source="cell_count", help_text="Cells, i.e. jobs.")
    finished = serializers.IntegerField(source="finished_count")
    created_by = serializers.CharField(source="created_by.username", default=None)

    class Meta:
        model = Sweep
        fields = [
            "id",
            "name",
            "model",
            "prompt",
            "x_axis",
            "y_axis",
            "total",
            "finished",
            "cancelled_at",
            "created_by",
            "created_at",
        ]


class SweepListCreateAPI(WorkspaceScopedAPIView):
    pagination_class = PageNumberPagination

    @extend_schema(responses={200: SweepSummaryOutput(many=True), **error_responses(401, 404)}, tags=["experiments"])
    def get(self, request, slug):
        return paginated(request, self, selectors.sweep_list(workspace=self.membership.workspace), SweepSummaryOutput)

    @extend_schema(
        request=SweepInput,
        parameters=[OpenApiParameter("dry_run", bool, description="As the body's dry_run.")],
        responses={201: SweepOutput, 200: SweepCostOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["experiments"],
        summary="Start a strength sweep / XY grid (one job per cell), or with dry_run answer its cost",
    )
    def post(self, request, slug):
        data = _sweep_input(request)
        dry_run = data.pop("dry_run") or request.query_params.get("dry_run") in ("1", "true")
        sweep, cells = sweeps.sweep_create(actor=self.membership, dry_run=dry_run, **data)
        if dry_run:
            body = {"dry_run": True, "cells": cells, "limit": settings.LORASITE_SWEEP_MAX_CELLS}
            return Response(SweepCostOutput(body).data)
        grid = selectors.sweep_grid(sweep=selectors.sweep_get(workspace=self.membership.workspace, sweep_id=sweep.id))
        return Response(SweepOutput(grid).data, status=status.HTTP_201_CREATED)


class SweepDetailAPI(WorkspaceScopedAPIView):
    @extend_schema(responses={200: SweepOutput, **error_responses(401, 404)}, tags=["experiments"])
    def get(self, request, slug, sweep_id):
        sweep = selectors.sweep_get(workspace=self.membership.workspace, sweep_id=sweep_id)
        return Response(SweepOutput(selectors.sweep_grid(sweep=sweep)).data)


class SweepCancelAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=None,
        responses={200: SweepOutput, **error_responses(401, 403, 404, 409)},
        tags=["experiments"],
        summary="Cancel every cell still queued or running",
    )
    def post(self, request, slug, sweep_id):
        sweep = selectors.sweep_get(workspace=self.membership.workspace, sweep_id=sweep_id)
        sweeps.sweep_cancel(actor=self.membership, sweep=sweep)
        sweep = selectors.sweep_get(workspace=self.membership.workspace, sweep_id=sweep_id)
        return Response(SweepOutput(selectors.sweep_grid(sweep=sweep)).data)


class ContactSheetOutput(serializers.Serializer):
    url = serializers.CharField(help_text="Signed, expiring (≤ 1 h) URL of the PNG.")


class SweepContactSheetAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=None,
        responses={200: ContactSheetOutput, **error_responses(401, 404, 409)},
        tags=["experiments"],
        summary="The contact sheet PNG (made once every cell has finished; 409 before)",
    )
    def get(self, request, slug, sweep_id):
        sweep = selectors.sweep_get(workspace=self.membership.workspace, sweep_id=sweep_id)
        key = sweeps.sweep_contact_sheet(sweep=sweep)
        url = get_object_store().download_url(
            key, filename=f"sweep-{sweep.id}.png", expires_in=settings.LORASITE_SIGNED_URL_SECONDS
        )
        return Response({"url": request.build_absolute_uri(url) if not url.startswith("http") else url})


# --- A/B tests ------------------------------------------------------------------------------------------------


class StackInput(serializers.Serializer):
    label = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    loras = LoRAEntryInput(many=True, required=False, default=list)


class ABTestInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    model = serializers.CharField(max_length=64)
    prompts = serializers.ListField(child=serializers.CharField(max_length=4000), max_length=abtests.MAX_PROMPTS)
    seeds = serializers.ListField(child=serializers.IntegerField(min_value=0), max_length=100)
    negative_prompt = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    params = ParamsInput(required=False, default=dict, help_text="Shared by every job; the seeds come from `seeds`.")
    stack_a = StackInput()
    stack_b = StackInput()
    dry_run = serializers.BooleanField(default=False, help_text="Check everything and answer the cost; queue nothing.")


class WinRateOutput(serializers.Serializer):
    label = serializers.CharField()
    wins_a = serializers.IntegerField()
    wins_b = serializers.IntegerField()
    ties = serializers.IntegerField(help_text="Counted apart: not in the win rate.")
    win_rate_a = serializers.FloatField(allow_null=True, help_text="A's share of the decisive votes.")
    ci_low = serializers.FloatField(allow_null=True, help_text="Wilson 95 % interval of win_rate_a.")
    ci_high = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True, help_text="Two-sided exact binomial test against 0.5.")
    enough_votes = serializers.BooleanField(help_text=f"At least {selectors.MIN_DECISIVE_VOTES} decisive votes.")
    verdict = serializers.CharField(help_text="At α = 0.05; 'not enough votes yet' below the minimum.")


class ABTestOutput(serializers.Serializer):
    id = serializers.IntegerField(source="test.id")
    name = serializers.CharField(source="test.name")
    model = serializers.CharField(source="test.model_key")
    prompts = serializers.ListField(source="test.prompts", child=serializers.CharField())
    seeds = serializers.ListField(source="test.seeds", child=serializers.IntegerField())
    label_a = serializers.CharField(source="test.label_a")
    label_b = serializers.CharField(source="test.label_b")
    stack_a = serializers.ListField(source="test.stack_a", child=serializers.DictField())
    stack_b = serializers.ListField(source="test.stack_b", child=serializers.DictField())
    jobs_total = serializers.IntegerField()
    jobs_finished = serializers.IntegerField()
    voters = serializers.IntegerField()
    overall = serializers.SerializerMethodField()
    per_prompt = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(source="test.created_at")

    @extend_schema_field(WinRateOutput)
    def get_overall(self, results) -> dict:
        return results.overall.as_dict()

    @extend_schema_field(WinRateOutput(many=True))
    def get_per_prompt(self, results) -> list[dict]:
        return [w.as_dict() for w in results.per_prompt]


class ABTestSummaryOutput(serializers.ModelSerializer):
    model = serializers.CharField(source="model_key")
    pairs = serializers.IntegerField(source="pair_count")
    votes = serializers.IntegerField(source="vote_count")

    class Meta:
        model = ABTest
        fields = ["id", "name", "model", "label_a", "label_b", "pairs", "votes", "created_at"]


class ABTestCostOutput(serializers.Serializer):
    dry_run = serializers.BooleanField()
    jobs = serializers.IntegerField(help_text="2 × prompts × seeds.")
    limit = serializers.IntegerField(help_text="LORASITE_ABTEST_MAX_JOBS.")


class ABTestListCreateAPI(WorkspaceScopedAPIView):
    pagination_class = PageNumberPagination

    @extend_schema(responses={200: ABTestSummaryOutput(many=True), **error_responses(401, 404)}, tags=["experiments"])
    def get(self, request, slug):
        return paginated(request, self, selectors.abtest_list(workspace=self.membership.workspace), ABTestSummaryOutput)

    @extend_schema(
        request=ABTestInput,
        parameters=[OpenApiParameter("dry_run", bool, description="As the body's dry_run.")],
        responses={201: ABTestOutput, 200: ABTestCostOutput, **error_responses(400, 401, 403, 404, 409)},
        tags=["experiments"],
        summary="Start a blind A/B test (two jobs per prompt × seed), or with dry_run answer its cost",
    )
    def post(self, request, slug):
        data = parse_input(ABTestInput, request.data)
        dry_run = data.pop("dry_run") or request.query_params.get("dry_run") in ("1", "true")
        for side in ("stack_a", "stack_b"):
            stack = data[side]
            data[side] = abtests.Stack(
                loras=tuple(LoRARequest(**entry) for entry in stack["loras"]), label=stack["label"]
            )
        data["params"] = dict(data["params"])
        test, jobs = abtests.abtest_create(actor=self.membership, dry_run=dry_run, **data)
        if dry_run:
            return Response({"dry_run": True, "jobs": jobs, "limit": settings.LORASITE_ABTEST_MAX_JOBS})
        test = selectors.abtest_get(workspace=self.membership.workspace, test_id=test.id)
        return Response(ABTestOutput(selectors.abtest_results(test=test)).data, status=status.HTTP_201_CREATED)


class ABTestDetailAPI(WorkspaceScopedAPIView):
    @extend_schema(responses={200: ABTestOutput, **error_responses(401, 404)}, tags=["experiments"])
    def get(self, request, slug, test_id):
        test = selectors.abtest_get(workspace=self.membership.workspace, test_id=test_id)
        return Response(ABTestOutput(selectors.abtest_results(test=test)).data)


class BlindPairOutput(serializers.Serializer):
    id = serializers.IntegerField(source="pair.id")
    prompt = serializers.CharField()
    seed = serializers.IntegerField(source="pair.seed")
    ready = serializers.BooleanField(help_text="Both outputs have succeeded: the pair can be voted on.")
    left_url = serializers.CharField(allow_null=True)
    right_url = serializers.CharField(allow_null=True)
    my_vote = serializers.CharField(source="my_side", help_text="left, right, tie or '' (not voted).")


class ABVoteInput(serializers.Serializer):
    choice = serializers.ChoiceField(choices=abtests.SIDES)


class ABTestPairsAPI(WorkspaceScopedAPIView):
    @extend_schema(
        responses={200: BlindPairOutput(many=True), **error_responses(401, 404)},
        tags=["experiments"],
        summary="The pairs as you see them: left and right in your own order, no names",
    )
    def get(self, request, slug, test_id):
        test = selectors.abtest_get(workspace=self.membership.workspace, test_id=test_id)
        return Response(BlindPairOutput(selectors.abtest_blind_pairs(test=test, user=request.user), many=True).data)


class ABVoteAPI(WorkspaceScopedAPIView):
    @extend_schema(
        request=ABVoteInput,
        responses={200: BlindPairOutput, **error_responses(400, 401, 404, 409)},
        tags=["experiments"],
        summary="Vote on a pair (left, right or tie as you saw it; again: changes your vote); viewers vote too",
    )
    def put(self, request, slug, test_id, pair_id):
        choice = parse_input(ABVoteInput, request.data)["choice"]
        test = selectors.abtest_get(workspace=self.membership.workspace, test_id=test_id)
        abtests.abvote_set(actor=self.membership, pair=selectors.abpair_get(test=test, pair_id=pair_id), side=choice)
        pair = next(p for p in selectors.abtest_blind_pairs(test=test, user=request.user) if p.pair.id == pair_id)
        return Response(BlindPairOutput(pair).data)
