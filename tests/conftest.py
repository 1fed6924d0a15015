import subprocess

import boto3
import pytest
from django.conf import settings
from moto.server import ThreadedMotoServer
from rest_framework.test import APIClient

from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory
from tests.workers_fixtures import announced  # noqa: F401  (a fixture: GPU workers in the registry)
from workspaces.models import Role


@pytest.fixture(scope="session", autouse=True)
def s3_server():
    """A real S3 API over HTTP (moto's server) with the test bucket; the default storage points at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=settings.MOTO_PORT, verbose=False)
    server.start()
    client = boto3.client(
        "s3",
        endpoint_url=settings.AWS_S3_ENDPOINT_URL,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=settings.AWS_STORAGE_BUCKET_NAME)
    # What the README asks of a production bucket: browsers PUT parts directly and read their ETag.
    client.put_bucket_cors(
        Bucket=settings.AWS_STORAGE_BUCKET_NAME,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedMethods": ["PUT", "GET", "HEAD"],
                    "AllowedOrigins": ["*"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                }
            ]
        },
    )
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


@pytest.fixture(scope="session")
def demo_models() -> dict:
    """The tiny demo pipelines, built offline once per session into LORASITE_MODELS_DIR."""
    from generation.runtime.demo_models import build_demo_models

    return build_demo_models(settings.LORASITE_MODELS_DIR)


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
def owner(workspace, member_of):
    return member_of(Role.OWNER)


@pytest.fixture
def api(owner, client_for) -> APIClient:
    """An API client signed in as the owner of `workspace`."""
    return client_for(owner)


@pytest.fixture
def outsider(db):
    return UserFactory()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, demo_models, tmp_path_factory):
    """A real Celery worker process (the default queue and the queue of every demo model) on the real
    Redis broker, using the test database and the S3 API server — what production runs, on the demo
    pipelines."""
    import redis as redis_client

    from tests.fault_services import kill_process_group, start_celery_worker, worker_environment

    if not settings.USING_POSTGRES or not settings.USING_REDIS:
        pytest.skip("needs PostgreSQL and Redis (required, and so never skipped, in CI)")
    redis_client.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    process = start_celery_worker(
        env=worker_environment(settings.CELERY_BROKER_URL, tmp_path_factory.mktemp("worker-var")),
        name="e2e",
        log_path=tmp_path_factory.getbasetemp() / "celery-worker.log",
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        kill_process_group(process)
