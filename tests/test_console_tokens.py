"""The console's API token page (/account/tokens/): anyone with a role manages their own tokens,
an admin everyone's; keys are shown once and never again."""

import json
import logging
import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import api_token_create
from audit.models import AuditEntry
from santaadmin.roles import ADMIN, ANALYST, AUDITOR

PAGE = "/account/tokens/"
NEW = "/account/tokens/new/"


def revoke_url(token) -> str:
    return f"/account/tokens/{token.pk}/revoke/"


def create(browser, **fields):
    data = {"name": "siem", "scopes": ["events:read"], "expires_days": ""}
    data.update(fields)
    return browser.post(NEW, data)


def shown_key(response) -> str:
    match = re.search(r'<code class="key">([^<]+)</code>', response.content.decode())
    assert match, response.content.decode()
    return match.group(1)


def test_any_role_sees_the_page_and_the_nav_link(console):
    for role in (ANALYST, AUDITOR, ADMIN):
        browser = console(role, f"{role}-person")
        response = browser.get(PAGE)
        assert response.status_code == 200
        html = response.content.decode()
        assert f'href="{PAGE}" aria-current="page">API tokens</a>' in html
        assert 'name="csrfmiddlewaretoken"' in html
        assert f'action="{NEW}"' in html


def test_no_role_no_page_and_no_link(console):
    browser = console(None)
    assert browser.get(PAGE).status_code == 403
    assert create(browser).status_code == 403
    assert not ApiToken.objects.exists()
    assert b"API tokens" not in browser.get("/accounts/login/").content


def test_create_shows_the_key_once(console, caplog):
    browser = console(AUDITOR, "audrey")
    with caplog.at_level(logging.DEBUG):
        response = create(browser, name="siem", scopes=["events:read", "rules:read"])
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = shown_key(response)
    html = response.content.decode()
    assert "cannot be shown again" in html
    token = ApiToken.objects.get()
    assert (token.user, token.name) == (browser.user, "siem")
    assert token.scopes == ["rules:read", "events:read"] and token.expires_at is None
    assert key.startswith(token.prefix)
    # The list shows the prefix, never the key; neither do the logs or the audit trail.
    listing = browser.get(PAGE).content.decode()
    assert token.prefix in listing and key not in listing
    assert key not in caplog.text
    stored = json.dumps(
        list(AuditEntry.objects.values()) + list(ApiToken.objects.values()), default=str
    )
    assert key not in stored
    [entry] = AuditEntry.objects.filter(action="api_token.create")
    assert entry.actor_name == "audrey"
    # The key works, within its scopes and the auditor's role.
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/events/").status_code == 200
    assert api.get("/api/v1/hosts/").status_code == 403


def test_resubmitting_the_form_does_not_make_a_second_token(console):
    browser = console(ANALYST)
    assert create(browser).status_code == 200
    again = create(browser)
    assert again.status_code == 400
    assert b"already has an active token named" in again.content
    assert ApiToken.objects.count() == 1
    assert b'class="key"' not in again.content


def test_expiry_in_days(console):
    browser = console(ANALYST)
    create(browser, expires_days="30")
    token = ApiToken.objects.get()
    assert token.expires_at is not None
    assert 29 <= (token.expires_at - token.created_at).days <= 30


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scopes": []}, b"This field is required."),
        ({"scopes": ["rules:admin"]}, b"Select a valid choice."),
        ({"name": ""}, b"This field is required."),
        ({"name": "x" * 101}, b"at most 100 characters"),
        ({"expires_days": "0"}, b"greater than or equal to 1"),
        ({"expires_days": "soon"}, b"Enter a whole number."),
    ],
)
def test_invalid_forms_are_shown_again(console, fields, message):
    response = create(console(ANALYST), **fields)
    assert response.status_code == 400
    assert message in response.content
    assert not ApiToken.objects.exists()


def test_list_shows_own_tokens_only_to_a_non_admin(console):
    ana = console(ANALYST, "ana")
    bob = console(ANALYST, "bob")
    own, _ = api_token_create(user=ana.user, name="mine", scopes=["read"])
    other, _ = api_token_create(user=bob.user, name="bobs-secret-job", scopes=["write"])
    html = ana.get(PAGE).content.decode()
    assert own.prefix in html and "mine" in html
    assert other.prefix not in html and "bobs-secret-job" not in html
    assert "Everyone else" not in html


def test_revoke_own_token(console):
    browser = console(AUDITOR)
    token, key = api_token_create(user=browser.user, name="siem", scopes=["read"])
    page = browser.get(PAGE).content.decode()
    assert f'action="{revoke_url(token)}"' in page
    assert "data-confirm=" in page  # console.js asks first
    response = browser.post(revoke_url(token))
    assert response.status_code == 302 and response["Location"] == PAGE
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert "revoked" in browser.get(PAGE).content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/rules/").status_code == 401
    [entry] = AuditEntry.objects.filter(action="api_token.revoke")
    assert entry.actor == browser.user
    assert browser.get(revoke_url(token)).status_code == 405  # POST only


def test_a_non_admin_cannot_revoke_someone_elses_token(console):
    ana = console(ANALYST, "ana")
    bob = console(ANALYST, "bob")
    other, _ = api_token_create(user=bob.user, name="job", scopes=["write"])
    assert ana.post(revoke_url(other)).status_code == 404
    assert ana.post("/account/tokens/999999/revoke/").status_code == 404
    other.refresh_from_db()
    assert other.revoked_at is None


def test_an_admin_sees_and_revokes_everyones_tokens(console):
    admin = console(ADMIN, "adam")
    bob = console(ANALYST, "bob")
    other, _ = api_token_create(user=bob.user, name="bobs-job", scopes=["write"])
    html = admin.get(PAGE).content.decode()
    assert "Everyone else" in html and "bobs-job" in html and other.prefix in html
    assert f'action="{revoke_url(other)}"' in html
    assert admin.post(revoke_url(other)).status_code == 302
    other.refresh_from_db()
    assert other.revoked_at is not None
    [entry] = AuditEntry.objects.filter(action="api_token.revoke")
    assert (entry.actor_name, entry.object_repr) == ("adam", f"{other.prefix} bobs-job (bob)")


def test_forms_need_csrf(console):
    browser = Client(enforce_csrf_checks=True)
    user = console(ANALYST).user
    browser.force_login(user)
    token, _ = api_token_create(user=user, name="kept", scopes=["read"])
    assert create(browser).status_code == 403
    assert browser.post(revoke_url(token)).status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None and ApiToken.objects.count() == 1
