import boto3
import pytest
from django.conf import settings
from moto.server import ThreadedMotoServer
from rest_framework.test import APIClient

from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory
from workspaces.models import Role


@pytest.fixture(scope="session", autouse=True)
def s3_server():
    """A real S3 API over HTTP (moto's server) with the test bucket; the default storage points at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=settings.MOTO_PORT, verbose=False)
    server.start()
    client = boto3.client(
        "s3", endpoint_url=settings.AWS_S3_ENDPOINT_URL, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=settings.AWS_STORAGE_BUCKET_NAME)
    yield client
    server.stop()


@pytest.fixture
def s3_keys(s3_server):
    """Lists every object key in the test bucket (to assert nothing was left behind)."""

    def keys(prefix: str = "") -> list[str]:
        paginator = s3_server.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    return keys


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def workspace(db):
    return WorkspaceFactory()


@pytest.fixture
def member_of(workspace):
    """member_of(role) → a user with that role in `workspace`."""

    def make(role: str = Role.MEMBER, ws=None):
        return MembershipFactory(workspace=ws or workspace, role=role).user

    return make


@pytest.fixture
def client_for():
    """client_for(user) → an APIClient authenticated as that user."""

    def make(user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def outsider(db):
    return UserFactory()
