"""The OpenAPI schema (/api/schema/) and Swagger UI (/api/docs/): valid, complete, offline."""

import re
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from rest_framework.test import APIClient

from santaadmin.roles import AUDITOR
from santaadmin.urls import router
from tests.api import assert_error

SCHEMA = "/api/schema/"
DOCS = "/api/docs/"


def router_paths() -> set[str]:
    """Every list path the API router serves: /api/v1/rules/, /api/v1/hosts/, ..."""
    return {f"/api/v1/{prefix}/" for prefix, _, _ in router.registry}


def test_schema_is_openapi_3_with_every_router_path(analyst_api):
    response = analyst_api.get(SCHEMA, {"format": "json"})
    assert response.status_code == 200, response.content
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "santaadmin API"
    paths = set(schema["paths"])
    assert router_paths() <= paths, router_paths() - paths
    assert {"/api/v1/rules/bulk/", "/api/v1/hosts/{machine_id}/rules/"} <= paths
    assert {
        "/api/v1/rules/bulk-delete/",
        "/api/v1/rules/export/",
        "/api/v1/rules/import/",
        "/api/v1/enrollments/{id}/revoke/",
        "/api/v1/approval-requests/{id}/approve/",
        "/api/v1/approval-requests/{id}/deny/",
        "/api/v1/binaries/{sha256}/",
        "/api/v1/certificates/{sha256}/",
    } <= paths
    # The audit trail pages by cursor (no count); the other lists count.
    audit = schema["paths"]["/api/v1/audit-entries/"]["get"]
    names = {p["name"] for p in audit["parameters"]}
    assert {"cursor", "page_size", "action", "actor", "since", "until"} <= names
    tags = schema["paths"]["/api/v1/tags/"]["get"]
    assert {"page", "page_size", "name", "name_contains"} <= {p["name"] for p in tags["parameters"]}
    export = schema["paths"]["/api/v1/rules/export/"]["get"]
    assert {"format", "tag", "policy"} <= {p["name"] for p in export["parameters"]}
    enrollment = schema["components"]["schemas"]["Enrollment"]["properties"]
    assert "secret_hash" not in enrollment and "secret" not in enrollment
    # Only the REST API: not the agents' sync endpoints, not the schema itself.
    assert all(path.startswith("/api/v1/") for path in paths), paths


def test_schema_default_is_yaml(auditor_api):
    response = auditor_api.get(SCHEMA)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert response.content.startswith(b"openapi: 3.")


def test_schema_documents_write_bodies_and_errors(analyst_api):
    schema = analyst_api.get(SCHEMA, {"format": "json"}).json()
    create = schema["paths"]["/api/v1/rules/"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/RuleInputRequest")
    error = {"$ref": "#/components/schemas/Error"}
    for code in ("400", "401", "403"):
        assert create["responses"][code]["content"]["application/json"]["schema"] == error
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"error", "detail"}


def test_generated_schema_validates_without_warnings(tmp_path):
    # --fail-on-warn raises on any warning or error of the generator; --validate checks the
    # document against the OpenAPI 3 JSON schema.
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert out.read_text().startswith("openapi: 3.")


def test_docs_page_for_a_signed_in_user_uses_local_assets(auditor_console):
    response = auditor_console.get(DOCS)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(s.startswith("/static/drf_spectacular_sidecar/swagger-ui-dist/") for s in sources)
    assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
    assert "cdn" not in html.lower()
    # No inline script (the split view): every <script> has a src, for a strict CSP.
    assert html.count("<script") == len(re.findall(r"<script src=", html))


def test_docs_init_script_is_served_from_the_app(auditor_console):
    response = auditor_console.get(DOCS, {"script": ""})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in response.content.decode()


def test_anonymous_is_refused_the_schema_with_the_api_error_body(db):
    response = APIClient().get(SCHEMA, {"format": "json"})
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    body = response.json()
    assert body["error"] == "not_authenticated" and body["detail"]


@pytest.mark.parametrize("query", ["", "?script="])
def test_anonymous_browser_is_sent_to_sign_in_for_the_docs(db, client, query):
    response = client.get(DOCS + query)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=" + quote(DOCS + query)
    assert b"swagger" not in response.content.lower()


def test_signing_in_leads_back_to_the_docs(db, client):
    User.objects.create_user("reader", password="docs-reader-password-4e1")
    User.objects.get(username="reader").groups.add(Group.objects.get(name=AUDITOR))
    login = client.get(DOCS)["Location"]
    response = client.post(
        login, {"username": "reader", "password": "docs-reader-password-4e1"}, follow=True
    )
    assert response.redirect_chain[-1][0] == DOCS
    assert response.status_code == 200 and b"swagger" in response.content.lower()


def test_a_bad_token_on_the_docs_is_still_401(db):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token sat_not-a-real-key")
    assert api.get(DOCS).status_code == 401


@pytest.mark.parametrize("url", [SCHEMA, DOCS])
def test_a_user_without_a_role_is_refused(norole_api, url):
    response = norole_api.get(url)
    assert response.status_code == 403
    if url == SCHEMA:
        assert_error(norole_api.get(url, HTTP_ACCEPT="application/json"), 403)
