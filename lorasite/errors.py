"""The project's error classes and the one API exception handler that maps them.

Every API error body has the same shape::

    {"message": "<one human-readable sentence>", "errors": {"<field>": ["<problem>", ...]}}

`errors` is empty when the problem is not about a particular field. Services raise these classes;
views never build error responses by hand.
"""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler


class ApplicationError(Exception):
    status_code = status.HTTP_400_BAD_REQUEST
    default_message = "The request could not be processed."

    def __init__(self, message: str | None = None, *, errors: dict[str, list[str]] | None = None, **extra: Any):
        self.message = message or self.default_message
        self.errors = errors or {}
        self.extra = extra
        super().__init__(self.message)


class InvalidInput(ApplicationError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_message = "The request has invalid fields."


class PermissionDenied(ApplicationError):
    status_code = status.HTTP_403_FORBIDDEN
    default_message = "Your role in this workspace does not allow this."


class NotFound(ApplicationError, Http404):
    """Also an Http404, so server-rendered pages answer 404 through Django's own handling."""

    status_code = status.HTTP_404_NOT_FOUND
    default_message = "Not found."


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    default_message = "The request conflicts with the current state."


class PayloadTooLarge(ApplicationError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_message = "The upload is too large."


class Unprocessable(ApplicationError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_message = "The content could not be processed."


def _first_message(errors: dict[str, list[str]]) -> str:
    for field, messages in errors.items():
        if messages:
            text = str(messages[0])
            return text if field in ("non_field_errors", "__all__") else f"{field}: {text}"
    return InvalidInput.default_message


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF nests errors for nested serializers and lists; the API reports them as dotted paths."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(detail, list) and detail and all(isinstance(item, (dict, list)) for item in detail):
        flat = {}
        for index, item in enumerate(detail):
            flat.update(_flatten(item, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    items = detail if isinstance(detail, list) else [detail]
    return {prefix or "non_field_errors": [str(item) for item in items]}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApplicationError):
        body = {"message": exc.message, "errors": exc.errors, **exc.extra}
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        response.data = {"message": _first_message(errors), "errors": errors}
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        response.data = {"message": str(detail), "errors": {}}
    return response
