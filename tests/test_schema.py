import pytest
import yaml

pytestmark = pytest.mark.django_db

EXPECTED = {
    "/api/v1/auth/token/": {"post"},
    "/api/v1/workspaces/": {"get", "post"},
    "/api/v1/workspaces/{slug}/": {"get", "patch", "delete"},
    "/api/v1/workspaces/{slug}/members/": {"get", "post"},
    "/api/v1/workspaces/{slug}/members/{user_id}/": {"patch", "delete"},
}


def test_schema_documents_every_endpoint_with_shapes(client):
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    for path, methods in EXPECTED.items():
        assert path in schema["paths"], path
        for method in methods:
            operation = schema["paths"][path][method]
            assert operation["responses"], (path, method)
            if method in ("post", "patch") and path != "/api/v1/auth/token/":
                assert "requestBody" in operation, (path, method)
            success = [code for code in operation["responses"] if code.startswith("2")]
            assert success, (path, method)
            if method != "delete":
                assert "content" in operation["responses"][success[0]], (path, method)
    assert "Error" in schema["components"]["schemas"]


def test_docs_page_renders(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
