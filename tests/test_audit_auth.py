"""Sign-ins, failed sign-ins, permission denials, and changes to users and their roles are in
the audit trail too; changes to users and roles also when made outside a request."""

import json
import sys
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client, RequestFactory

from audit.context import AuditContextMiddleware
from audit.management.commands.audit import verify
from audit.models import AuditEntry
from santaadmin.roles import ANALYST, AUDITOR

PASSWORD = "correct-horse-battery-9f3a"
WRONG = "wrong-password-7d1c"


def entries(action, about=None):
    """Entries of `action`, oldest first; `about`: only those about that user (fixtures'
    users are recorded too)."""
    found = AuditEntry.objects.filter(action=action).order_by("id")
    if about is not None:
        found = found.filter(object_type="user", object_id=str(about.pk))
    return list(found)


def everything_recorded() -> str:
    return json.dumps(list(AuditEntry.objects.values()), default=str)


@pytest.fixture
def person(db):
    return User.objects.create_user("pat", password=PASSWORD)


def test_sign_in_is_recorded(person):
    browser = Client(REMOTE_ADDR="10.1.2.3")
    response = browser.post("/accounts/login/", {"username": "pat", "password": PASSWORD})
    assert response.status_code == 302
    [entry] = entries("auth.sign_in")
    assert (entry.actor, entry.actor_name) == (person, "pat")
    assert (entry.object_type, entry.object_id, entry.object_repr) == (
        "user",
        str(person.pk),
        "pat",
    )
    assert entry.source_ip == "10.1.2.3"
    assert not entries("user.update")  # last_login is not a change worth an entry
    assert PASSWORD not in everything_recorded()


def test_failed_sign_in_records_the_name_never_the_password(person):
    browser = Client(REMOTE_ADDR="10.9.9.9")
    response = browser.post("/accounts/login/", {"username": "pat", "password": WRONG})
    assert response.status_code == 200  # the form again, with an error
    browser.post("/accounts/login/", {"username": "no-such-user", "password": WRONG})
    first, second = entries("auth.sign_in_failed")
    assert first.actor is None and first.actor_name == "anonymous"
    assert (first.object_repr, first.after) == ("pat", {"username": "pat"})
    assert first.source_ip == "10.9.9.9"
    assert second.object_repr == "no-such-user"
    assert not entries("auth.sign_in")
    recorded = everything_recorded()
    assert WRONG not in recorded and "*****" not in recorded


def test_auditor_posting_to_a_write_page_is_recorded(console):
    browser = console(AUDITOR, "audrey")
    assert browser.post("/rules/new/").status_code == 403
    [entry] = entries("auth.permission_denied")
    assert (entry.actor, entry.actor_name) == (browser.user, "audrey")
    assert (entry.object_type, entry.object_id) == ("url", "/rules/new/")
    assert entry.after["method"] == "POST"
    assert "rules.add_rule" in entry.after["permissions"]
    assert entry.source_ip == "127.0.0.1"


def test_allowed_and_anonymous_requests_record_no_denial(console, client):
    assert console(ANALYST, "ana").get("/rules/").status_code == 200
    assert client.post("/rules/new/").status_code == 302  # to the sign-in page
    assert not entries("auth.permission_denied")


def test_api_permission_denial_is_recorded(auditor_api, norole_api, client):
    response = auditor_api.post(
        "/api/v1/rules/",
        {"rule_type": "BINARY", "identifier": "a" * 64, "policy": "BLOCKLIST"},
        format="json",
    )
    assert response.status_code == 403
    assert norole_api.get("/api/v1/rules/").status_code == 403
    assert client.get("/api/v1/rules/").status_code in (401, 403)  # anonymous: not recorded
    posted, listed = entries("auth.permission_denied")
    assert (posted.actor_name, posted.object_id) == ("audrey", "/api/v1/rules/")
    assert posted.after == {"method": "POST", "permissions": ["rules.add_rule"]}
    assert (listed.actor_name, listed.after["method"]) == ("nobody", "GET")


def in_request(change, user=None):
    """Run `change` inside a request, as a view behind the audit middleware would."""
    request = RequestFactory().post("/admin/somewhere/", REMOTE_ADDR="10.0.0.5")
    request.user = user

    def view(request):
        change()
        return None

    AuditContextMiddleware(view)(request)


def test_user_changes_made_in_a_request_are_recorded(admin_user):
    created = {}

    def create():
        created["user"] = User.objects.create_user("new-analyst", password=PASSWORD)

    in_request(create, admin_user)
    user = created["user"]
    [create_entry] = entries("user.create", about=user)
    assert (create_entry.actor, create_entry.object_id) == (admin_user, str(user.pk))
    assert create_entry.before is None
    assert create_entry.after == {
        "username": "new-analyst",
        "is_active": True,
        "is_staff": False,
        "is_superuser": False,
    }
    assert create_entry.source_ip == "10.0.0.5"

    def promote():
        user.is_staff = True
        user.save()
        user.save()  # nothing changed: no second entry

    in_request(promote, admin_user)
    [update] = entries("user.update", about=user)
    assert (update.before["is_staff"], update.after["is_staff"]) == (False, True)
    assert update.object_repr == "new-analyst"

    def add_role():
        user.groups.add(Group.objects.get(name=ANALYST))

    def change_roles():
        user.groups.remove(Group.objects.get(name=ANALYST))
        Group.objects.get(name=AUDITOR).user_set.add(user)  # from the group's side

    def clear_roles():
        user.groups.clear()

    in_request(add_role, admin_user)
    in_request(change_roles, admin_user)
    in_request(clear_roles, admin_user)
    added, removed, joined, cleared = entries("user.groups", about=user)
    assert (added.before, added.after) == ({"groups": []}, {"groups": [ANALYST]})
    assert (removed.before, removed.after) == ({"groups": [ANALYST]}, {"groups": []})
    assert (joined.before, joined.after) == ({"groups": []}, {"groups": [AUDITOR]})
    assert (cleared.before, cleared.after) == ({"groups": [AUDITOR]}, {"groups": []})
    assert {e.object_id for e in (added, removed, joined, cleared)} == {str(user.pk)}
    assert all(e.actor == admin_user for e in (added, removed, joined, cleared))
    assert PASSWORD not in everything_recorded()


def test_adding_a_user_in_the_admin_is_recorded(admin_client):
    response = admin_client.post(
        "/admin/auth/user/add/",
        {
            "username": "via-admin",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "usable_password": "true",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    [entry] = entries("user.create", about=User.objects.get(username="via-admin"))
    assert entry.object_repr == "via-admin" and entry.actor_name == "admin"
    assert PASSWORD not in everything_recorded()


def user_history(username):
    pk = User.objects.filter(username=username).values_list("pk", flat=True).first()
    return [
        (e.action, e.actor_name, e.actor_id)
        for e in AuditEntry.objects.filter(object_type="user", object_id=str(pk)).order_by("id")
    ]


def test_changes_outside_a_request_are_recorded_as_system(db):
    user = User.objects.create_user("scripted")
    pk = user.pk
    user.is_staff = True
    user.save()
    user.groups.add(Group.objects.get(name=ANALYST))
    Group.objects.get(name=AUDITOR).user_set.add(user)
    history = user_history("scripted")
    user.delete()
    deleted = AuditEntry.objects.get(action="user.delete", object_id=str(pk))
    assert history == [
        ("user.create", "system", None),
        ("user.update", "system", None),
        ("user.groups", "system", None),
        ("user.groups", "system", None),
    ]
    assert (deleted.actor_name, deleted.object_repr) == ("system", "scripted")
    assert deleted.before["is_staff"] is True
    [update] = entries("user.update")
    assert (update.before["is_staff"], update.after["is_staff"]) == (False, True)
    assert [e.after for e in entries("user.groups")] == [
        {"groups": [ANALYST]},
        {"groups": [ANALYST, AUDITOR]},
    ]
    assert verify() == AuditEntry.objects.count()  # the chain holds every one of them


def test_createsuperuser_is_recorded_with_the_command_name(db, monkeypatch):
    # What `python manage.py createsuperuser` leaves in sys.argv.
    monkeypatch.setattr(sys, "argv", ["/srv/santaadmin/manage.py", "createsuperuser"])
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command(
        "createsuperuser", "--noinput", username="root", email="root@example.com", stdout=StringIO()
    )
    assert user_history("root") == [("user.create", "command:createsuperuser", None)]
    [entry] = entries("user.create")
    assert entry.after == {
        "username": "root",
        "is_active": True,
        "is_staff": True,
        "is_superuser": True,
    }
    assert PASSWORD not in everything_recorded()


@pytest.mark.parametrize(
    ("argv", "actor"),
    [
        (["manage.py", "shell", "-c", "..."], "command:shell"),
        (["/usr/bin/django-admin", "shell"], "command:shell"),
        (["/srv/venv/bin/celery", "-A", "santaadmin", "worker"], "system"),
        (["manage.py", "--help"], "system"),
        (["python"], "system"),
    ],
)
def test_the_actor_outside_a_request_names_the_command(db, monkeypatch, argv, actor):
    monkeypatch.setattr(sys, "argv", argv)
    User.objects.create_user("from-a-process")
    assert user_history("from-a-process") == [("user.create", actor, None)]


def test_in_a_request_the_actor_is_the_signed_in_user_even_in_a_command(admin_user, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver"])
    in_request(lambda: User.objects.create_user("via-runserver"), admin_user)
    assert user_history("via-runserver") == [("user.create", "admin", admin_user.pk)]
