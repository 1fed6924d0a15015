"""The OpenAPI schema /api/v1/schema/ serves, loaded into schemathesis with Django's WSGI application as
its transport, for the fuzz (tests/test_schemathesis.py) and the per-operation tests (tests/test_api_coverage.py).

Built by the view's own generator when a test module is collected (schemathesis' fixture-based loader
does not run on pytest 9, which dropped `Node._nodeid`)."""

import json

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

SCHEMA = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
)
SCHEMA.app = get_wsgi_application()


@pytest.fixture
def in_process_wsgi(settings):
    """Requests through SCHEMA.app inside the test's transaction."""
    settings.ALLOWED_HOSTS = ["localhost"]  # the host the WSGI transport sends
    # As Django's test client does: the handler's end-of-request hook would close the connection that
    # holds the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
