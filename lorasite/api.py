"""Small helpers shared by the API views: parse input, paginate output, document errors."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import parsers, serializers
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response

ERROR_SERIALIZER = inline_serializer(
    "Error",
    fields={
        "message": serializers.CharField(help_text="One human-readable sentence naming the problem."),
        "code": serializers.CharField(
            help_text="The kind of problem, for programs: invalid, not_found, service_unavailable…"
        ),
        "errors": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()), help_text="Problems per field (dotted paths)."
        ),
    },
)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering 400 for a body nested deeper than Python's decoder recurses."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None


def document_common_errors(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: the answers any operation can give, documented once here rather
    than in every view — 503 when a service it needs is down (lorasite.errors.unavailable_service) and, for
    an operation with a body, 413 when the body is over DATA_UPLOAD_MAX_MEMORY_SIZE."""
    error = {"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path_item in result["paths"].values():
        for operation in path_item.values():
            operation["responses"].setdefault("503", error)
            if "requestBody" in operation:
                operation["responses"].setdefault("413", error)
    return result


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ERROR_SERIALIZER) for code in codes}


def parse_input(serializer_class: type[serializers.Serializer], data: Any, *, partial: bool = False) -> dict:
    serializer = serializer_class(data=data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def paginated(request: Request, view: Any, queryset: QuerySet, serializer_class: type, /, **context: Any) -> Response:
    """One page of `queryset`, by the view's `pagination_class` — which is also what makes the schema document
    the page object and its query parameters. `context` goes to the serializer (positional-only above, so it
    may hold `request`)."""
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True, context=context).data)
