"""A bounded, deterministic schemathesis run over every operation of /api/v1/schema/, in process through
Django's WSGI application: no answer may be a 5xx, and every documented answer must match its schema.

The schema is the one /api/v1/schema/ serves, built by the same generator when this module is collected
(schemathesis' fixture-based loader does not run on pytest 9, which dropped `Node._nodeid`)."""

import json

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

pytestmark = pytest.mark.django_db

MAX_EXAMPLES_PER_OPERATION = 20


schema = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
)
schema.app = get_wsgi_application()


@pytest.fixture
def in_process_wsgi(settings):
    settings.ALLOWED_HOSTS = ["localhost"]  # the host the WSGI transport sends
    # As Django's test client does: the handler's end-of-request hook would close the connection that
    # holds the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth_headers(owner) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.create(user=owner).key}"}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES_PER_OPERATION,
    derandomize=True,  # the same examples on every run
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx_or_off_schema(case, in_process_wsgi, workspace, auth_headers):
    # A random slug is always a 404; the caller's own workspace reaches the operation's code.
    if "slug" in (case.path_parameters or {}):
        case.path_parameters["slug"] = workspace.slug
    case.call_and_validate(headers=auth_headers, checks=[not_a_server_error, response_schema_conformance])
