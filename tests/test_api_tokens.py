"""API tokens (accounts): hashed keys, expiry, revocation, scopes intersected with roles, the
`apitoken` command, and the audit trail naming the token an entry was made through."""

import datetime
import hashlib
import json
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import scopes as scope_rules
from accounts.errors import InvalidScope, InvalidToken, TokenNameExists
from accounts.models import ApiToken
from accounts.services import api_token_create, api_token_revoke
from audit import chain
from audit.management.commands.audit import verify
from audit.models import AuditEntry
from hosts.models import Host
from rules.models import Rule
from rules.services import RuleInput, rule_create
from santaadmin.roles import ADMIN, ANALYST, AUDITOR
from tests.api import assert_error

SHA_A = "a" * 64
SHA_B = "b" * 64
RULES = "/api/v1/rules/"
NEW_RULE = {"rule_type": "BINARY", "identifier": SHA_B, "policy": "ALLOWLIST"}


def person(username: str, role: str | None = ANALYST) -> User:
    user = User.objects.create_user(username, password="not-used-in-tests-5e2a")
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def client_for(key: str, scheme: str = "Token") -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"{scheme} {key}")
    return api


def token_for(user, *scopes, name="script", **options):
    return api_token_create(user=user, name=name, scopes=list(scopes), **options)


def everything_stored() -> str:
    """Every token and audit column, as text."""
    rows = list(ApiToken.objects.values()) + list(AuditEntry.objects.values())
    return json.dumps(rows, default=str)


@pytest.fixture
def rule(db):
    return rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))


# --- keys ---------------------------------------------------------------------------------------


def test_only_a_hash_of_the_key_is_stored(db):
    token, key = token_for(person("ana"), "read")
    assert key.startswith("sat_") and len(key) >= 4 + 43  # 256 random bits, urlsafe
    assert token.prefix == key[:12]
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in everything_stored()
    assert key[12:20] not in everything_stored()  # nothing past the public prefix
    other_token, other_key = token_for(person("bob"), "read")
    assert other_key != key and other_token.prefix != token.prefix


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "token", "bearer"])
def test_token_and_bearer_schemes_authenticate(db, rule, scheme):
    _, key = token_for(person("ana"), "read")
    response = client_for(key, scheme).get(RULES)
    assert response.status_code == 200, response.content
    assert response.json()["count"] == 1


@pytest.mark.parametrize(
    "header",
    [
        "Token",
        "Token sat_a sat_b",
        "Token sat_unknown-key",
        "Bearer " + "x" * 500,
        "Token sat_é",
    ],
)
def test_malformed_or_unknown_keys_are_401(db, header):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=header)
    body = assert_error(api.get(RULES), 401)
    assert body["error"] == "authentication_failed"


def test_expired_token_is_refused(db, rule):
    user = person("ana")
    token, key = token_for(user, "read", expires_at=timezone.now() + datetime.timedelta(days=1))
    api = client_for(key)
    assert api.get(RULES).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    body = assert_error(api.get(RULES), 401)
    assert body["detail"] == "Token expired."


def test_revocation_takes_effect_on_the_next_request(db, rule):
    token, key = token_for(person("ana"), "write")
    api = client_for(key)
    assert api.get(RULES).status_code == 200
    api_token_revoke(token=token)
    body = assert_error(api.get(RULES), 401)
    assert body["detail"] == "Token revoked."
    assert_error(api.post(RULES, NEW_RULE, format="json"), 401)
    assert not Rule.objects.filter(identifier=SHA_B).exists()


def test_inactive_user_is_refused(db, rule):
    user = person("ana")
    _, key = token_for(user, "read")
    user.is_active = False
    user.save()
    body = assert_error(client_for(key).get(RULES), 401)
    assert body["detail"] == "User inactive or deleted."


def test_deleting_the_user_deletes_their_tokens(db):
    user = person("ana")
    _, key = token_for(user, "read")
    user.delete()
    assert not ApiToken.objects.exists()
    assert_error(client_for(key).get(RULES), 401)


# --- scopes -------------------------------------------------------------------------------------


def snapshot():
    rules = sorted(Rule.objects.values_list("pk", "identifier", "policy", "revision"))
    hosts = sorted(Host.objects.values_list("machine_id", "client_mode_override"))
    return rules, hosts


def test_read_only_token_reads_but_cannot_write(agent, rule):
    agent.sync()
    _, key = token_for(person("ana", ANALYST), "read")
    api = client_for(key)
    host = f"/api/v1/hosts/{agent.machine_id}/"
    for url in (RULES, f"{RULES}{rule.pk}/", "/api/v1/hosts/", host, "/api/v1/events/"):
        assert api.get(url).status_code == 200, url
    before = snapshot()
    refusals = [
        (api.post(RULES, NEW_RULE, format="json"), "rules:write"),
        (api.post(f"{RULES}bulk/", {"rules": [NEW_RULE]}, format="json"), "rules:write"),
        (api.patch(f"{RULES}{rule.pk}/", {"policy": "ALLOWLIST"}, format="json"), "rules:write"),
        (api.delete(f"{RULES}{rule.pk}/"), "rules:write"),
        (api.patch(host, {"client_mode_override": "LOCKDOWN"}, format="json"), "hosts:write"),
    ]
    for response, scope in refusals:
        body = assert_error(response, 403)
        assert body["error"] == "insufficient_scope"
        assert repr(scope) in body["detail"], body
    assert snapshot() == before


@pytest.mark.parametrize(
    ("scopes", "allowed", "refused"),
    [
        (
            ["events:read"],
            ["/api/v1/events/"],
            [(RULES, "rules:read"), ("/api/v1/hosts/", "hosts:read")],
        ),
        (["rules:read"], [RULES], [("/api/v1/events/", "events:read")]),
        (
            ["hosts:read"],
            ["/api/v1/hosts/", "/api/v1/tag-rules/", "/api/v1/profiles/", "/api/v1/fanouts/"],
            [(RULES, "rules:read")],
        ),
        (["rules:write"], [RULES], [("/api/v1/hosts/", "hosts:read")]),  # write implies read
        (["read"], [RULES, "/api/v1/hosts/", "/api/v1/events/"], []),
    ],
)
def test_area_scopes(db, scopes, allowed, refused):
    _, key = token_for(person("ana", ANALYST), *scopes)
    api = client_for(key)
    for url in allowed:
        assert api.get(url).status_code == 200, (scopes, url)
    for url, scope in refused:
        body = assert_error(api.get(url), 403)
        assert body["error"] == "insufficient_scope" and repr(scope) in body["detail"]


def test_an_area_write_scope_writes_only_its_area(agent, rule):
    agent.sync()
    _, key = token_for(person("ana", ANALYST), "rules:write")
    api = client_for(key)
    assert api.post(RULES, NEW_RULE, format="json").status_code == 201
    response = api.patch(
        f"/api/v1/hosts/{agent.machine_id}/", {"client_mode_override": "LOCKDOWN"}, format="json"
    )
    assert_error(response, 403)
    assert Host.objects.get().client_mode_override == ""


def test_a_token_never_widens_the_role(db, rule):
    """An auditor's `write` token still cannot write: the role refuses first."""
    _, key = token_for(person("audrey", AUDITOR), "write")
    api = client_for(key)
    assert api.get(RULES).status_code == 200
    before = snapshot()
    body = assert_error(api.post(RULES, NEW_RULE, format="json"), 403)
    assert body["error"] == "permission_denied"
    assert_error(api.delete(f"{RULES}{rule.pk}/"), 403)
    assert snapshot() == before
    _, norole_key = token_for(person("nobody", None), "write")
    assert_error(client_for(norole_key).get(RULES), 403)


def test_an_admin_write_token_writes(db, rule):
    _, key = token_for(person("adam", ADMIN), "write")
    response = client_for(key).patch(f"{RULES}{rule.pk}/", {"policy": "ALLOWLIST"}, format="json")
    assert response.status_code == 200, response.content


def test_a_session_has_no_scope_limit(db, client):
    user = person("ana", ANALYST)
    token_for(user, "events:read")  # a token of hers changes nothing for her browser
    client.force_login(user)
    assert client.get(RULES).status_code == 200
    response = client.post(RULES, NEW_RULE, content_type="application/json")
    assert response.status_code == 201, response.content


def test_a_scope_refusal_is_recorded_with_the_token(db):
    token, key = token_for(person("ana", ANALYST), "read")
    client_for(key).post(RULES, NEW_RULE, format="json")
    [entry] = AuditEntry.objects.filter(action="auth.permission_denied")
    assert (entry.actor_name, entry.actor_token) == ("ana", token.prefix)
    assert entry.after == {"method": "POST", "permissions": [], "scope": "rules:write"}
    assert entry.object_id == RULES


def test_scope_rules():
    allows = scope_rules.allows
    assert allows(["write"], "audit", write=True)
    assert allows(["read"], "reports", write=False) and not allows(["read"], "rules", write=True)
    assert allows(["hosts:write"], "hosts", write=False)
    assert not allows(["hosts:read"], "hosts", write=True)
    assert not allows(["hosts:write"], "rules", write=False)
    # A view whose area is unknown needs a shorthand: fail closed.
    assert not allows(["rules:write"], None, write=False)
    assert not allows(["rules:write"], "auth", write=False)
    assert allows(["read"], None, write=False) and not allows(["read"], None, write=True)
    assert scope_rules.required_scope(None, write=True) == "write"
    assert scope_rules.required_scope("events", write=False) == "events:read"

    class View:
        scope_area = "reports"

    assert scope_rules.area_of(View(), Rule) == "reports"
    assert scope_rules.area_of(object(), Rule) == "rules"
    assert set(scope_rules.SCOPES) == {
        "read",
        "write",
        *(
            f"{a}:{m}"
            for a in ("rules", "hosts", "events", "audit", "reports")
            for m in ("read", "write")
        ),
    }


# --- the services -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        (["rules:admin"], "Unknown scope rules:admin"),
        (["read", "everything", "x:read"], "Unknown scopes everything, x:read"),
        ([], "at least one scope"),
        ("read", "a list"),
    ],
)
def test_unknown_scopes_are_refused_at_creation(db, scopes, message):
    with pytest.raises(InvalidScope) as caught:
        api_token_create(user=person("ana"), name="x", scopes=scopes)
    assert message in caught.value.detail
    assert not ApiToken.objects.exists()
    assert not AuditEntry.objects.filter(object_type="api_token").exists()


def test_scopes_are_stored_deduplicated_in_order(db):
    token, _ = token_for(person("ana"), "rules:write", "read", "rules:write")
    assert token.scopes == ["read", "rules:write"]


def test_names_are_required_and_unique_among_active_tokens(db):
    user = person("ana")
    with pytest.raises(InvalidToken):
        token_for(user, "read", name="  ")
    first, _ = token_for(user, "read", name="siem")
    with pytest.raises(TokenNameExists):
        token_for(user, "write", name="siem")
    token_for(person("bob"), "read", name="siem")  # another user's name is theirs
    api_token_revoke(token=first)
    second, _ = token_for(user, "read", name="siem")  # free again once revoked
    assert second.pk != first.pk


def test_expiry_must_be_in_the_future(db):
    with pytest.raises(InvalidToken):
        token_for(person("ana"), "read", expires_at=timezone.now())


def test_create_and_revoke_are_audited_without_the_key(db):
    user = person("ana")
    token, key = token_for(user, "events:read", name="siem")
    api_token_revoke(token=token)
    api_token_revoke(token=token)  # already revoked: nothing more recorded
    created, revoked = AuditEntry.objects.filter(object_type="api_token").order_by("id")
    assert created.action == "api_token.create" and revoked.action == "api_token.revoke"
    assert created.object_id == str(token.pk)
    assert created.object_repr == f"{token.prefix} siem (ana)"
    assert created.after["scopes"] == ["events:read"]
    assert created.after["prefix"] == token.prefix and created.after["user"] == "ana"
    assert revoked.before["revoked_at"] is None and revoked.after["revoked_at"]
    assert key not in everything_stored()


def test_last_use_is_written_at_most_once_a_minute(db, rule):
    token, key = token_for(person("ana"), "read")
    api = APIClient(REMOTE_ADDR="10.1.2.3")
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    def token_updates(response_of):
        with CaptureQueriesContext(connection) as queries:
            assert response_of().status_code == 200
        return [q["sql"] for q in queries if q["sql"].startswith('UPDATE "accounts_apitoken"')]

    assert len(token_updates(lambda: api.get(RULES))) == 1
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None and token.last_used_ip == "10.1.2.3"
    assert token_updates(lambda: api.get(RULES)) == []  # within the minute: no write
    token.refresh_from_db()
    assert token.last_used_at == first
    a_minute_ago = first - datetime.timedelta(seconds=61)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=a_minute_ago)
    assert len(token_updates(lambda: api.get(RULES))) == 1
    token.refresh_from_db()
    assert token.last_used_at > first


# --- the audit trail names the token ------------------------------------------------------------


def test_entries_made_through_a_token_name_it(db, analyst_api, client):
    response = analyst_api.post(RULES, NEW_RULE, format="json")
    assert response.status_code == 201
    entry = AuditEntry.objects.get(action="rule.create")
    assert (entry.actor_name, entry.actor_token) == ("ana", analyst_api.token.prefix)
    # A browser session and work outside a request name none.
    client.force_login(analyst_api.user)
    client.patch(f"{RULES}{response.json()['id']}/", {"policy": "BLOCKLIST"}, "application/json")
    assert AuditEntry.objects.get(action="rule.update").actor_token == ""
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    assert AuditEntry.objects.filter(action="rule.create").order_by("id").last().actor_token == ""


def test_the_audit_log_page_shows_and_filters_by_token(db, analyst_api, console):
    analyst_api.post(RULES, NEW_RULE, format="json")
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    prefix = analyst_api.token.prefix
    browser = console(AUDITOR)
    html = browser.get("/audit/").content.decode()
    assert f'ana · token <span class="mono">{prefix}</span>' in html
    filtered = browser.get("/audit/", {"token": prefix}).content.decode()
    body = filtered.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("data-entry=") == 1 and "rule.create" in body


def test_chain_covers_actor_token_and_old_entries_still_verify(db, analyst_api):
    # An entry without a token hashes exactly as before the field existed.
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    old = AuditEntry.objects.get(action="rule.create")
    document = json.loads(chain.canonical(old.seq, old))
    assert set(document) == {*chain.HASHED_FIELDS, "seq"}
    analyst_api.post(RULES, NEW_RULE, format="json")
    new = AuditEntry.objects.get(action="rule.create", actor_token=analyst_api.token.prefix)
    assert json.loads(chain.canonical(new.seq, new))["actor_token"] == analyst_api.token.prefix
    assert verify() == AuditEntry.objects.count()

    def set_token(value):
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE audit_auditentry SET actor_token = %s WHERE id = %s", [value, new.pk]
            )

    for edited in ("sat_forged123", ""):  # a changed token, the token removed
        set_token(edited)
        with pytest.raises(CommandError) as caught:
            verify()
        assert f"seq {new.seq} (id {new.pk})" in str(caught.value)
        set_token(new.actor_token)
        assert verify() == AuditEntry.objects.count()


def test_setting_a_token_on_an_old_entry_is_caught(db):
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    old = AuditEntry.objects.get(action="rule.create")
    assert verify() == AuditEntry.objects.count()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditentry SET actor_token = 'sat_x' WHERE id = %s", [old.pk])
    with pytest.raises(CommandError) as caught:
        verify()
    assert f"seq {old.seq} (id {old.pk})" in str(caught.value)


# --- manage.py apitoken -------------------------------------------------------------------------


def run(*args) -> list[str]:
    out = StringIO()
    call_command("apitoken", *args, stdout=out, stderr=StringIO())
    return out.getvalue().splitlines()


def test_command_create_prints_a_working_key_last(db, rule):
    person("carol", ANALYST)
    lines = run(
        "create", "carol", "--name", "siem", "--scope", "events:read", "--scope", "rules:read"
    )
    key = lines[-1]
    token = ApiToken.objects.get(name="siem")
    assert key.startswith(token.prefix) and " " not in key
    assert token.scopes == ["rules:read", "events:read"] and token.expires_at is None
    assert "cannot be shown again" in "\n".join(lines)
    api = client_for(key)
    assert api.get(RULES).status_code == 200
    assert_error(api.post(RULES, NEW_RULE, format="json"), 403)
    created = AuditEntry.objects.get(action="api_token.create")
    assert created.actor_name == "system" and created.actor_token == ""


def test_command_expiry(db):
    person("carol")
    run("create", "carol", "--name", "ci", "--scope", "read", "--expires-days", "30")
    expires = ApiToken.objects.get().expires_at
    expected = timezone.now() + datetime.timedelta(days=30)
    assert abs((expires - expected).total_seconds()) < 3600


def test_command_list_never_shows_keys(db):
    carol, dave = person("carol"), person("dave")
    _, carol_key = token_for(carol, "read", name="siem")
    dave_token, dave_key = token_for(dave, "write", name="deploy")
    api_token_revoke(token=dave_token)
    everyone = "\n".join(run("list"))
    assert "siem" in everyone and "deploy" in everyone and "revoked" in everyone
    assert carol_key not in everyone and dave_key not in everyone
    assert dave_token.prefix in everyone
    only_carol = "\n".join(run("list", "carol"))
    assert "siem" in only_carol and "deploy" not in only_carol
    ApiToken.objects.all().delete()
    assert "No API tokens" in run("list")[0]


def test_command_revoke(db, rule):
    token, key = token_for(person("carol"), "read")
    api = client_for(key)
    assert api.get(RULES).status_code == 200
    assert "revoked" in run("revoke", token.prefix)[0]
    assert_error(api.get(RULES), 401)
    assert "already revoked" in run("revoke", token.prefix + "…")[0]
    assert AuditEntry.objects.filter(action="api_token.revoke").count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "nobody-here", "--name", "x", "--scope", "read"], "No user named"),
        (["create", "carol", "--name", "x", "--scope", "rules:admin"], "Unknown scope rules:admin"),
        (["create", "carol", "--name", "taken", "--scope", "read"], "already has an active token"),
        (
            ["create", "carol", "--name", "x", "--scope", "read", "--expires-days", "0"],
            "expires-days",
        ),
        (["create", "carol", "--name", "x"], "--scope"),
        (["list", "nobody-here"], "No user named"),
        (["revoke", "sat_nothing1"], "No API token with prefix"),
    ],
)
def test_command_errors(db, args, message):
    carol = person("carol")
    token_for(carol, "read", name="taken")
    tokens = ApiToken.objects.count()
    with pytest.raises(CommandError) as caught:
        run(*args)
    assert message in str(caught.value)
    assert ApiToken.objects.count() == tokens
