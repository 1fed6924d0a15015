import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def test_token_round_trip():
    user = UserFactory(username="alice")
    client = APIClient()
    response = client.post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/workspaces/").status_code == 200
    assert user.auth_token.key == token


def test_wrong_password_is_400_with_message():
    UserFactory(username="alice")
    response = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "nope"}, format="json")
    assert response.status_code == 400
    assert "Unable to log in" in response.json()["message"]


def test_missing_fields_name_them():
    response = APIClient().post("/api/v1/auth/token/", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"username", "password"}


def test_anonymous_is_401_and_bad_token_is_401():
    assert APIClient().get("/api/v1/workspaces/").status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/v1/workspaces/")
    assert response.status_code == 401
    assert response.json()["message"] == "Invalid token."


def test_session_auth_works_for_the_dashboard(client):
    user = UserFactory()
    client.force_login(user)
    assert client.get("/api/v1/workspaces/").status_code == 200


def test_token_endpoint_is_throttled():
    UserFactory(username="alice")
    rates = {"auth_token": "3/minute"}
    from django.conf import settings

    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        from rest_framework.throttling import ScopedRateThrottle

        ScopedRateThrottle.THROTTLE_RATES = rates
        try:
            client = APIClient()
            codes = [
                client.post("/api/v1/auth/token/", {"username": "alice", "password": "x"}, format="json").status_code
                for _ in range(4)
            ]
        finally:
            ScopedRateThrottle.THROTTLE_RATES = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert codes == [400, 400, 400, 429]
