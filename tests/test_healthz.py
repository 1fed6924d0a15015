import pytest
from django.test import override_settings

from lorasite import health

pytestmark = pytest.mark.django_db


def test_healthz_ok_with_real_services(client):
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "storage": "ok"}}


def test_healthz_names_a_missing_bucket(client, settings):
    storages = {**settings.STORAGES, "default": {**settings.STORAGES["default"]}}
    storages["default"]["OPTIONS"] = {**storages["default"]["OPTIONS"], "bucket_name": "no-such-bucket"}
    with override_settings(STORAGES=storages):
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["storage"].startswith("failed")
    assert body["checks"]["database"] == "ok"
    assert "storage" in body["message"]


def test_healthz_names_an_unreachable_broker(client, monkeypatch):
    from lorasite.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("failed")
    assert "broker" in response.json()["message"]


def test_healthz_local_storage_probe(client, tmp_path):
    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}
    }
    with override_settings(STORAGES=storages):
        health.check_storage()
    assert list(tmp_path.iterdir()) == []
