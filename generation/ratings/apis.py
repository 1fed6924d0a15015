"""The rating API: PUT/DELETE /api/v1/workspaces/{slug}/generations/{id}/rating/ — the caller's stars for one
output. Every member rates, viewers included. A job's `rating` in the job API is `RatingOutput`."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from generation import selectors as job_selectors
from generation.ratings import selectors, services
from lorasite.api import error_responses, parse_input
from workspaces.scoping import WorkspaceScopedAPIView


class RatingOutput(serializers.Serializer):
    mine = serializers.IntegerField(allow_null=True, help_text="Your stars (1–5); null when you have not rated it.")
    average = serializers.FloatField(allow_null=True, help_text="The members' average; null without ratings.")
    count = serializers.IntegerField(help_text="How many members rated it.")


class RatingInput(serializers.Serializer):
    stars = serializers.IntegerField(min_value=services.STARS_MIN, max_value=services.STARS_MAX)


class RatingAPI(WorkspaceScopedAPIView):
    def _job(self, job_id):
        return job_selectors.job_get(workspace=self.membership.workspace, job_id=job_id)

    @extend_schema(
        request=RatingInput,
        responses={200: RatingOutput, **error_responses(400, 401, 404, 409)},
        tags=["generation"],
        summary="Rate an output 1–5 stars (again: changes your rating); 409 unless the job succeeded",
    )
    def put(self, request, slug, job_id):
        stars = parse_input(RatingInput, request.data)["stars"]
        job = self._job(job_id)
        services.rating_set(actor=self.membership, job=job, stars=stars)
        return Response(RatingOutput(selectors.rating_summary(job=job, user=request.user)).data)

    @extend_schema(
        responses={204: None, **error_responses(401, 404)},
        tags=["generation"],
        summary="Remove your rating of an output (404 when you have none)",
    )
    def delete(self, request, slug, job_id):
        services.rating_delete(actor=self.membership, job=self._job(job_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
