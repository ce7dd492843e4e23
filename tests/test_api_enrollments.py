"""The enrollments API: admins create (the secret shown once), change and revoke; the secret's
hash never leaves the server; what a change does to hosts."""

import json

import pytest

from audit.models import AuditEntry
from hosts.models import Enrollment, Host
from hosts.selectors import hash_secret
from tests.agent import SyncFailed
from tests.api import assert_error

URL = "/api/v1/enrollments/"


def detail(pk) -> str:
    return f"{URL}{pk}/"


def state() -> list:
    return sorted(
        Enrollment.objects.values_list(
            "pk", "name", "client_mode", "client_cert_issuer", "revoked_at", "tags__name"
        )
    )


def test_create_returns_the_secret_once_and_it_admits_agents(admin_api, make_agent):
    response = admin_api.post(
        URL,
        {"name": "laptops", "tags": ["ENG"], "client_mode": "LOCKDOWN"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("sa_") and body["secret_prefix"] == secret[:8]
    assert (body["name"], body["tags"], body["client_mode"], body["revoked"]) == (
        "laptops",
        ["eng"],
        "LOCKDOWN",
        False,
    )
    enrollment = Enrollment.objects.get(name="laptops")
    assert enrollment.secret_hash == hash_secret(secret)
    shown = json.dumps(admin_api.get(detail(enrollment.pk)).json())
    assert secret not in shown and enrollment.secret_hash not in shown
    assert "secret" not in admin_api.get(detail(enrollment.pk)).json()

    agent = make_agent(secret=secret)
    agent.sync()
    host = Host.objects.get(machine_id=agent.machine_id)
    assert host.enrollment == enrollment
    assert admin_api.get(detail(enrollment.pk)).json()["host_count"] == 1
    entry = AuditEntry.objects.get(action="enrollment.create", object_repr="laptops")
    assert secret not in json.dumps(entry.after)


@pytest.mark.parametrize("role", ["admin_api", "analyst_api", "auditor_api"])
def test_no_output_holds_the_hash(request, role, make_enrollment):
    enrollment, secret = make_enrollment(tags=["eng"])
    api = request.getfixturevalue(role)
    for url in (URL, detail(enrollment.pk)):
        text = api.get(url).content.decode()
        assert enrollment.secret_hash not in text and secret not in text
        assert "secret_hash" not in text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "a\x01b"}, "name"),
        ({"name": "e", "client_mode": "PARANOID"}, "client_mode"),
        ({"name": "e", "tags": ["Not A Tag"]}, "tags"),
        ({"name": "e", "tags": "eng"}, "tags"),
        ({"name": "e", "client_cert_issuer": "CN=x\nO=y"}, "client_cert_issuer"),
        ({"name": "e", "secret": "sa_mine"}, "secret"),
    ],
)
def test_create_refuses_bad_input(admin_api, body, field):
    before = state()
    assert_error(admin_api.post(URL, body, format="json"), 400, field)
    assert state() == before
    assert not AuditEntry.objects.filter(action__startswith="enrollment.").exists()


def test_duplicate_name_and_issuer_are_409(admin_api, make_enrollment):
    make_enrollment(name="laptops")
    admin_api.post(URL, {"name": "certs", "client_cert_issuer": "CN=Corp CA"}, format="json")
    before = state()
    assert assert_error(admin_api.post(URL, {"name": "laptops"}, format="json"), 409)["error"] == (
        "enrollment_exists"
    )
    body = assert_error(
        admin_api.post(URL, {"name": "other", "client_cert_issuer": "CN=Corp CA"}, format="json"),
        409,
        "client_cert_issuer",
    )
    assert "certs" in body["detail"]
    assert state() == before


def test_revoke_locks_agents_out_and_is_audited(admin_api, make_enrollment, make_agent):
    enrollment, secret = make_enrollment()
    agent = make_agent(secret=secret)
    agent.sync()
    response = admin_api.post(f"{detail(enrollment.pk)}revoke/")
    assert response.status_code == 200, response.content
    assert response.json()["revoked"] is True and response.json()["revoked_at"]
    with pytest.raises(SyncFailed):
        agent.sync()
    assert AuditEntry.objects.filter(action="enrollment.revoke", object_id=str(enrollment.pk))
    # Again: nothing changes, no second entry.
    assert admin_api.post(f"{detail(enrollment.pk)}revoke/").status_code == 200
    assert AuditEntry.objects.filter(action="enrollment.revoke").count() == 1


def test_patch_mode_reaches_the_enrollments_hosts_at_their_next_preflight(
    admin_api, make_enrollment, make_agent
):
    enrollment, secret = make_enrollment()
    agent = make_agent(secret=secret)
    agent.sync()
    assert agent.client_mode == "MONITOR"
    response = admin_api.patch(detail(enrollment.pk), {"client_mode": "LOCKDOWN"}, format="json")
    assert response.status_code == 200, response.content
    agent.sync()
    assert agent.client_mode == "LOCKDOWN"
    host = admin_api.get(f"/api/v1/hosts/{agent.machine_id}/").json()
    assert host["configuration"]["sources"]["client_mode"] == "enrollment"
    entry = AuditEntry.objects.get(action="enrollment.update")
    assert (entry.before["client_mode"], entry.after["client_mode"]) == ("", "LOCKDOWN")


def test_patch_tags_apply_to_hosts_registering_later_only(admin_api, make_enrollment, make_agent):
    enrollment, secret = make_enrollment(tags=["eng"])
    first = make_agent(secret=secret)
    first.sync()
    response = admin_api.patch(detail(enrollment.pk), {"tags": ["Ops"]}, format="json")
    assert response.status_code == 200
    assert response.json()["tags"] == ["ops"]
    second = make_agent(secret=secret)
    second.sync()
    tags = {
        agent.machine_id: admin_api.get(f"/api/v1/hosts/{agent.machine_id}/").json()["tags"]
        for agent in (first, second)
    }
    assert tags == {first.machine_id: ["eng"], second.machine_id: ["ops"]}


def test_patch_issuer_and_clear_it(admin_api, make_enrollment):
    enrollment, _ = make_enrollment()
    url = detail(enrollment.pk)
    assert admin_api.patch(url, {"client_cert_issuer": "CN=Corp"}, format="json").json()[
        "client_cert_issuer"
    ] == ("CN=Corp")
    assert Enrollment.objects.get(pk=enrollment.pk).client_cert_issuer == "CN=Corp"
    admin_api.patch(url, {"client_cert_issuer": ""}, format="json")
    assert Enrollment.objects.get(pk=enrollment.pk).client_cert_issuer == ""
    assert AuditEntry.objects.filter(action="enrollment.update").count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "renamed"}, "name"),
        ({"client_mode": "NOPE"}, "client_mode"),
        ({"tags": ["bad tag"]}, "tags"),
        ({"client_mode": None}, "client_mode"),
    ],
)
def test_patch_refuses_bad_input(admin_api, make_enrollment, body, field):
    enrollment, _ = make_enrollment(tags=["eng"])
    before = state()
    assert_error(admin_api.patch(detail(enrollment.pk), body, format="json"), 400, field)
    assert state() == before
    assert not AuditEntry.objects.filter(action="enrollment.update").exists()


def test_patch_to_a_taken_issuer_is_409(admin_api, make_enrollment):
    admin_api.post(URL, {"name": "certs", "client_cert_issuer": "CN=Corp CA"}, format="json")
    enrollment, _ = make_enrollment()
    before = state()
    assert_error(
        admin_api.patch(detail(enrollment.pk), {"client_cert_issuer": "CN=Corp CA"}, format="json"),
        409,
        "client_cert_issuer",
    )
    assert state() == before


def test_filters(admin_api, make_enrollment):
    make_enrollment(name="laptops", tags=["eng"])
    old, _ = make_enrollment(name="old-laptops")
    admin_api.post(f"{detail(old.pk)}revoke/")

    def names(**params):
        return [e["name"] for e in admin_api.get(URL, params).json()["results"]]

    assert names(revoked="true") == ["old-laptops"]
    assert names(revoked="false") == ["laptops"]
    assert names(name="laptops") == ["laptops"]
    assert names(name_contains="LAPTOP") == ["laptops", "old-laptops"]
    assert names(tag="ENG") == ["laptops"]
    assert_error(admin_api.get(URL, {"page_size": "many"}), 400, "page_size")


def test_list_queries_are_bounded(admin_api, make_enrollment, django_assert_max_num_queries):
    for number in range(20):
        make_enrollment(name=f"e{number}", tags=["eng", f"t{number}"])
    with django_assert_max_num_queries(7):
        body = admin_api.get(URL, {"page_size": 100}).json()
    assert body["count"] == 20
