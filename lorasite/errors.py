"""The project's error classes and the one API exception handler that maps them.

Every API error body has the same shape::

    {"message": "<one human-readable sentence>", "code": "<machine-readable kind>",
     "errors": {"<field>": ["<problem>", ...]}}

`errors` is empty when the problem is not about a particular field. Services raise these classes;
views never build error responses by hand. A service the app depends on failing (storage, the job
queue) is a 503 naming it, on the API, the pages and the admin alike (`unavailable_service`).
"""

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from kombu.exceptions import OperationalError as BrokerError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"
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
    code = "permission_denied"
    default_message = "Your role in this workspace does not allow this."


class NotFound(ApplicationError, Http404):
    """Also an Http404, so server-rendered pages answer 404 through Django's own handling."""

    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"
    default_message = "Not found."


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"
    default_message = "The request conflicts with the current state."


class PayloadTooLarge(ApplicationError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"
    default_message = "The upload is too large."


class Unprocessable(ApplicationError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "unprocessable"
    default_message = "The content could not be processed."


class ServiceUnavailable(ApplicationError):
    """A service the request needs is down; `service` names it for clients and people."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "service_unavailable"
    default_message = "A service this request needs is unavailable; try again shortly."

    def __init__(self, message: str | None = None, *, service: str, **extra: Any):
        super().__init__(message, service=service, **extra)


def unavailable_service(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 for a storage or job-queue failure, or None when `exc` is neither.

    In the web process an OSError comes from the local storage backend's files (the database and
    Redis clients raise their own classes), so it counts as storage failing."""
    if isinstance(exc, ServiceUnavailable):
        return exc
    if isinstance(exc, BrokerError):
        return ServiceUnavailable("The job queue is unavailable; try again shortly.", service="job queue")
    if isinstance(exc, (BotoCoreError, ClientError, OSError)):
        return ServiceUnavailable("File storage is unavailable; try again shortly.", service="storage")
    return None


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


def error_body(exc: ApplicationError) -> dict[str, Any]:
    return {"message": exc.message, "code": exc.code, "errors": exc.errors, **exc.extra}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = PayloadTooLarge(
            f"The request body is over the limit of {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE); "
            "send LoRA files through the multipart upload.",
            limit_bytes=limit,
        )
    elif (unavailable := unavailable_service(exc)) is not None:
        logger.warning("%s unavailable: %r", unavailable.extra["service"], exc)
        exc = unavailable
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        response.data = {"message": _first_message(errors), "code": "invalid", "errors": errors}
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        response.data = {"message": str(detail), "code": exc.default_code, "errors": {}}
    return response
