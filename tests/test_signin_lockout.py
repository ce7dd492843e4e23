"""Sign-in lockout (django-axes, accounts.lockout): SIGNIN_LOCKOUT_FAILURES failures of one
user name from one address lock that pair out, SIGNIN_LOCKOUT_ADDRESS_FAILURES from one
address lock the address, for SIGNIN_LOCKOUT_MINUTES after the last failure — even the right
password is refused meanwhile — and an admin can unlock."""

import datetime
from io import StringIO

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from accounts.services import api_token_create
from audit.management.commands.audit import verify
from audit.models import AuditEntry
from santaadmin.roles import ANALYST

PASSWORD = "correct-horse-battery-9f3a"
WRONG = "wrong-password-7d1c"
LOGIN = "/accounts/login/"


@pytest.fixture(autouse=True)
def lockout_settings(settings):
    # Dozens of sign-ins per test: a fast hasher (the users are created after this).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.SIGNIN_LOCKOUT_FAILURES = 3
    settings.SIGNIN_LOCKOUT_ADDRESS_FAILURES = 7
    settings.SIGNIN_LOCKOUT_MINUTES = 15


@pytest.fixture
def pat(db):
    return User.objects.create_user("pat", password=PASSWORD)


@pytest.fixture
def sam(db):
    return User.objects.create_user("sam", password=PASSWORD)


def sign_in(username, password, address="10.1.1.1", **meta):
    return Client(REMOTE_ADDR=address, **meta).post(
        LOGIN, {"username": username, "password": password}
    )


def fail(username, times, address="10.1.1.1"):
    for _ in range(times):
        response = sign_in(username, WRONG, address)
        assert response.status_code in (200, 429)
    return response


def assert_locked(response, *words):
    assert response.status_code == 429, response.status_code
    text = response.content.decode()
    assert "Too many failed sign-ins" in text
    for word in words:
        assert word in text
    assert int(response["Retry-After"]) > 0


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/"


def test_failures_lock_the_user_name_even_with_the_right_password(pat):
    assert signed_in(sign_in("pat", PASSWORD))
    fail("pat", 2)
    assert fail("pat", 1).status_code == 429  # the third failure locks at once
    response = sign_in("pat", PASSWORD)
    assert_locked(response, "for this user name", "15 more minutes", "even with the right")
    assert "sessionid" not in response.cookies


def test_a_success_before_the_limit_resets_the_count(pat):
    fail("pat", 2)
    assert signed_in(sign_in("pat", PASSWORD))
    assert fail("pat", 2).status_code == 200
    assert signed_in(sign_in("pat", PASSWORD))


def test_another_address_and_another_user_are_not_locked(pat, sam):
    """Locking by user name alone would let anyone lock an admin out."""
    fail("pat", 3, address="192.0.2.66")
    assert_locked(sign_in("pat", PASSWORD, address="192.0.2.66"))
    assert signed_in(sign_in("pat", PASSWORD, address="10.1.1.1"))
    assert signed_in(sign_in("sam", PASSWORD, address="192.0.2.66"))


def test_an_address_trying_many_user_names_is_locked_for_all(pat, sam):
    for name in ("alice", "bob", "carol"):
        fail(name, 2, address="192.0.2.77")  # under the per-name limit each: 6 failures
    assert signed_in(sign_in("sam", PASSWORD, address="192.0.2.77"))  # resets sam's, not others
    fail("dave", 1, address="192.0.2.77")  # the 7th
    response = sign_in("pat", PASSWORD, address="192.0.2.77")
    assert_locked(response, "from your address")
    assert signed_in(sign_in("pat", PASSWORD, address="10.1.1.1"))


def test_the_lockout_ends_after_the_cool_off(pat):
    fail("pat", 3)
    assert_locked(sign_in("pat", PASSWORD))
    # 15 minutes pass since the last failure.
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - datetime.timedelta(minutes=15)
    )
    assert signed_in(sign_in("pat", PASSWORD))


def test_refused_attempts_do_not_extend_the_lockout_or_write(pat):
    fail("pat", 3)
    before = AccessAttempt.objects.values().get()
    entries = AuditEntry.objects.count()
    for _ in range(5):
        assert_locked(sign_in("pat", WRONG))
    assert AccessAttempt.objects.values().get() == before
    assert AuditEntry.objects.count() == entries


def test_the_lockout_is_recorded_in_the_audit_trail(pat):
    fail("pat", 3, address="10.7.7.7")
    assert_locked(sign_in("pat", PASSWORD, address="10.7.7.7"))
    failed = AuditEntry.objects.filter(action="auth.sign_in_failed")
    assert failed.count() == 3  # the refused attempt was checked against no password
    [entry] = AuditEntry.objects.filter(action="auth.sign_in_locked_out")
    assert (entry.actor_name, entry.object_type, entry.object_id) == ("anonymous", "user", "pat")
    assert entry.after == {
        "username": "pat",
        "address": "10.7.7.7",
        "locked": "user",
        "failures": 3,
        "minutes": 15,
    }
    assert entry.source_ip == "10.7.7.7"
    assert verify() == AuditEntry.objects.count()
    assert WRONG not in str(list(AccessAttempt.objects.values()))  # axes masks the password


def test_an_admin_unlocks_with_the_command(pat):
    fail("pat", 3, address="10.1.1.1")
    fail("pat", 3, address="10.2.2.2")
    out = StringIO()
    call_command("signin", "locked", stdout=out)
    assert out.getvalue().count("pat\t") == 2 and "locked" in out.getvalue()
    call_command("signin", "unlock", "pat", stdout=out)
    assert "2 failure counter(s) removed" in out.getvalue()
    assert signed_in(sign_in("pat", PASSWORD, address="10.1.1.1"))
    assert signed_in(sign_in("pat", PASSWORD, address="10.2.2.2"))
    [entry] = AuditEntry.objects.filter(action="auth.sign_in_unlocked")
    assert entry.actor_name == "command:signin"
    assert entry.after == {"username": "pat", "address": "", "counters_removed": 2}
    assert verify() == AuditEntry.objects.count()


def test_an_admin_unlocks_an_address(pat, sam):
    for name in ("alice", "bob", "carol", "dave"):
        fail(name, 2, address="192.0.2.77")
    assert_locked(sign_in("sam", PASSWORD, address="192.0.2.77"))
    call_command("signin", "unlock", "--address", "192.0.2.77", stdout=StringIO())
    assert signed_in(sign_in("sam", PASSWORD, address="192.0.2.77"))


def test_an_admin_unlocks_in_the_admin_site(pat, admin_client):
    fail("pat", 3)
    attempt = AccessAttempt.objects.get()
    response = admin_client.post(
        "/admin/axes/accessattempt/",
        {"action": "unlock", "_selected_action": [attempt.pk]},
    )
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()
    assert signed_in(sign_in("pat", PASSWORD))
    [entry] = AuditEntry.objects.filter(action="auth.sign_in_unlocked")
    assert entry.actor_name == "admin"


def test_unlock_needs_a_valid_target(db):
    with pytest.raises(Exception, match="not an IP address"):
        call_command("signin", "unlock", "--address", "nonsense", stdout=StringIO())
    with pytest.raises(Exception, match="user name, an address"):
        call_command("signin", "unlock", stdout=StringIO())


def test_the_client_address_comes_from_trusted_proxies_only(pat, sam, settings):
    settings.NUM_PROXIES = 1
    for n in range(3):  # behind the proxy, each failure from another X-Forwarded-For entry
        sign_in("pat", WRONG, address="10.0.0.2", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    assert signed_in(sign_in("pat", PASSWORD, address="10.0.0.2", HTTP_X_FORWARDED_FOR="8.8.8.8"))
    fail_from = {"address": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "garbage, 198.51.100.9"}
    for _ in range(3):
        sign_in("pat", WRONG, **fail_from)
    assert_locked(sign_in("pat", PASSWORD, **fail_from))
    # An entry that is not an address counts as the connection's (no 500 from the inet column).
    response = sign_in("sam", WRONG, address="10.0.0.2", HTTP_X_FORWARDED_FOR="not-an-ip")
    assert response.status_code == 200
    assert AccessAttempt.objects.get(username="sam").ip_address == "10.0.0.2"


def test_other_ways_in_are_unaffected(pat, sam):
    """The test client's login() (no request), force_login, API tokens and sessions."""
    fail("pat", 3, address="127.0.0.1")
    pat.groups.add(Group.objects.get(name=ANALYST))
    browser = Client()
    browser.force_login(pat)
    assert browser.get("/").status_code == 200
    assert Client().login(username="sam", password=PASSWORD)
    _, key = api_token_create(user=pat, name="locked-out-user", scopes=["read"])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/rules/").status_code == 200
    assert browser.get("/api/v1/rules/").status_code == 200


def test_lockout_off_when_the_setting_is_zero(pat, settings):
    settings.SIGNIN_LOCKOUT_FAILURES = 0
    settings.AXES_ENABLED = False  # what SIGNIN_LOCKOUT_FAILURES=0 sets at start-up
    fail("pat", 10)
    assert signed_in(sign_in("pat", PASSWORD))
