"""/healthz: 200 when the database, the Celery broker and the storage answer; 503 naming what failed.

Anyone (the orchestrator's probe) sees each service as ok/failed; only staff see the exception text, which can
name hosts, buckets and credentials' owners."""

import logging

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from lorasite.celery import app as celery_app

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def check_storage() -> None:
    bucket = getattr(default_storage, "bucket", None)
    if bucket is not None:  # S3-compatible: the bucket must exist and the credentials must reach it
        bucket.meta.client.head_bucket(Bucket=bucket.name)
        return
    # Local storage: the media directory must be writable.
    probe = default_storage.save(".healthz-probe", ContentFile(b""))
    default_storage.delete(probe)


CHECKS = {"database": check_database, "broker": check_broker, "storage": check_storage}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    show_details = request.user.is_authenticated and request.user.is_staff
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # any failure of a dependency is reported, none is raised
            logger.warning("healthz: %s failed: %s", name, exc)
            results[name] = f"failed: {type(exc).__name__}: {exc}"[:300] if show_details else "failed"
    failed = [name for name, result in results.items() if result != "ok"]
    body = {"status": "ok" if not failed else "unavailable", "checks": results}
    if failed:
        body["message"] = f"Unavailable: {', '.join(failed)} did not answer."
    return JsonResponse(body, status=503 if failed else 200)
