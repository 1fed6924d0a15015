"""A bounded, deterministic schemathesis run over every operation of /api/v1/schema/, in process through
Django's WSGI application: no answer may be a 5xx, and every documented answer must match its schema."""

import pytest
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.api_schema import SCHEMA, in_process_wsgi  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

MAX_EXAMPLES_PER_OPERATION = 20


@pytest.fixture
def auth_headers(owner) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.create(user=owner).key}"}


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES_PER_OPERATION,
    derandomize=True,  # the same examples on every run
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx_or_off_schema(case, in_process_wsgi, workspace, auth_headers):  # noqa: F811
    # A random slug is always a 404; the caller's own workspace reaches the operation's code.
    if "slug" in (case.path_parameters or {}):
        case.path_parameters["slug"] = workspace.slug
    case.call_and_validate(headers=auth_headers, checks=[not_a_server_error, response_schema_conformance])
