"""Every change is recorded in the audit trail, in the transaction of the change: who (the
signed-in user or API token's user, "system" for periodic work), what, before and after, why,
and from which address."""

import datetime

import pytest
from django.db import transaction
from django.utils import timezone

from audit.models import AuditEntry
from audit.services import audit_record
from hosts.models import ConfigurationProfile, Host
from hosts.services import (
    enrollment_create,
    enrollment_revoke,
    host_request_clean_sync,
    host_set_mode_override,
    host_set_tags,
    profile_create,
    profile_delete,
    profile_update,
    tag_rule_create,
    tag_rule_delete,
    tag_rule_update,
)
from rules.models import Rule
from rules.services import (
    RuleInput,
    rule_create,
    rule_update,
    rules_bulk_create,
    rules_bulk_delete,
    rules_expire,
)

SHA = "e" * 64


def entries(action):
    return list(AuditEntry.objects.filter(action=action).order_by("id"))


def test_api_rule_changes_record_actor_values_and_address(analyst_api, analyst):
    created = analyst_api.post(
        "/api/v1/rules/",
        {"rule_type": "BINARY", "identifier": SHA, "policy": "BLOCKLIST", "comment": "malware"},
        format="json",
    ).json()
    analyst_api.patch(
        f"/api/v1/rules/{created['id']}/",
        {"policy": "ALLOWLIST", "comment": "vetted"},
        format="json",
    )
    analyst_api.delete(f"/api/v1/rules/{created['id']}/")

    [create] = entries("rule.create")
    assert (create.actor, create.actor_name, create.object_id) == (
        analyst,
        "ana",
        str(created["id"]),
    )
    assert create.before is None
    assert create.after["policy"] == "BLOCKLIST"
    assert create.justification == "malware"
    assert create.source_ip == "127.0.0.1"
    [update] = entries("rule.update")
    assert (update.before["policy"], update.after["policy"]) == ("BLOCKLIST", "ALLOWLIST")
    assert update.justification == "vetted"
    [delete] = entries("rule.delete")
    assert delete.before["identifier"] == SHA and delete.after is None
    assert delete.actor == analyst


def test_comment_only_change_is_recorded_too(db):
    rule = rule_create(data=RuleInput("BINARY", SHA, "BLOCKLIST", comment="a"))
    rule_update(rule=rule, data=RuleInput("BINARY", SHA, "BLOCKLIST", comment="b"))
    [update] = entries("rule.update")
    assert (update.before["comment"], update.after["comment"]) == ("a", "b")


def test_bulk_changes_are_recorded(db):
    rules = rules_bulk_create(
        items=[RuleInput("BINARY", f"{n:064x}", "ALLOWLIST") for n in range(3)],
        justification="import",
    )
    bulk = entries("rule.bulk_create")
    assert sorted(e.object_id for e in bulk) == sorted(str(r.pk) for r in rules)
    assert {(e.actor_name, e.justification) for e in bulk} == {("system", "import")}
    assert sorted(e.after["identifier"] for e in bulk) == [f"{n:064x}" for n in range(3)]
    rules_bulk_delete(rule_ids=[r.pk for r in rules], justification="cleanup")
    assert [e.object_id for e in entries("rule.delete")] == sorted(str(r.pk) for r in rules)


def test_refused_change_records_nothing(db):
    rule_create(data=RuleInput("BINARY", SHA, "BLOCKLIST"))
    with pytest.raises(Exception):  # noqa: B017 - the conflict's type is not the point here
        rule_create(data=RuleInput("BINARY", SHA, "ALLOWLIST"))
    assert AuditEntry.objects.count() == 1


def test_expired_rules_are_deleted_by_the_system(agent):
    soon = timezone.now() + datetime.timedelta(minutes=5)
    rule = rule_create(data=RuleInput("BINARY", SHA, "ALLOWLIST", expires_at=soon))
    agent.sync()
    assert (("BINARY", SHA)) in agent.rules
    assert rules_expire(now=soon - datetime.timedelta(seconds=1)) == 0
    assert rules_expire(now=soon) == 1
    assert not Rule.objects.filter(pk=rule.pk).exists()
    [expired] = entries("rule.expire")
    assert expired.actor_name == "system" and expired.before["identifier"] == SHA
    agent.sync()
    assert ("BINARY", SHA) not in agent.rules


def test_expiry_in_the_past_is_refused(analyst_api):
    response = analyst_api.post(
        "/api/v1/rules/",
        {
            "rule_type": "BINARY",
            "identifier": SHA,
            "policy": "ALLOWLIST",
            "expires_at": "2001-01-01T00:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["fields"] == {"expires_at": ["expires_at must be in the future."]}
    assert not Rule.objects.exists()
    assert not AuditEntry.objects.exclude(object_type__in=["user", "api_token"]).exists()


def test_host_actions_are_recorded(agent):
    agent.preflight()
    host = Host.objects.get(machine_id=agent.machine_id)
    host_set_tags(host=host, tag_names=["eng"], justification="joins eng")
    host_set_tags(host=host, tag_names=["eng"])  # no change: nothing recorded
    host_set_mode_override(host=host, client_mode="LOCKDOWN")
    host_request_clean_sync(host=host, kind="CLEAN_ALL")
    [tags] = entries("host.set_tags")
    assert (tags.before, tags.after, tags.justification) == (
        {"tags": []},
        {"tags": ["eng"]},
        "joins eng",
    )
    [mode] = entries("host.set_mode")
    assert mode.after == {"client_mode_override": "LOCKDOWN"}
    [clean] = entries("host.request_clean_sync")
    assert clean.after == {"clean_sync_requested": "CLEAN_ALL"}
    assert {e.object_repr for e in (tags, mode, clean)} == {agent.machine_id}


def test_enrollment_profile_and_tag_rule_changes_are_recorded(db):
    _, secret = enrollment_create(name="laptops", tag_names=["eng"])
    enrollment_revoke(name="laptops")
    [created] = entries("enrollment.create")
    assert created.after["tags"] == ["eng"]
    assert secret not in str(created.after)  # the secret is never recorded
    assert entries("enrollment.revoke")[0].before == {"revoked_at": None}

    profile = profile_create(name="strict", values={"client_mode": "LOCKDOWN"}, tag_names=["eng"])
    profile_update(profile=profile, values={"client_mode": "MONITOR"})
    profile_delete(profile=ConfigurationProfile.objects.get(pk=profile.pk))
    [p_update] = entries("profile.update")
    assert (p_update.before["client_mode"], p_update.after["client_mode"]) == (
        "LOCKDOWN",
        "MONITOR",
    )
    assert entries("profile.delete")[0].before["tags"] == ["eng"]

    tag_rule = tag_rule_create(tag_name="lab", fact="hostname", operator="starts_with", value="l")
    tag_rule_update(rule=tag_rule, value="lab-")
    tag_rule_delete(rule=tag_rule)
    assert [e.action for e in AuditEntry.objects.filter(object_type="tag_rule").order_by("id")] == [
        "tag_rule.create",
        "tag_rule.update",
        "tag_rule.delete",
    ]
    assert entries("tag_rule.update")[0].after["value"] == "lab-"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_recording_outside_a_transaction_is_a_programming_error():
    with pytest.raises(RuntimeError):
        audit_record(action="x", object_type="y")
    with transaction.atomic():
        audit_record(action="x", object_type="y")
    assert AuditEntry.objects.count() == 1


def test_admin_cannot_change_or_delete_entries(admin_client, db):
    with transaction.atomic():
        entry = audit_record(action="x", object_type="y")
    assert admin_client.get("/admin/audit/auditentry/").status_code == 200
    assert admin_client.get("/admin/audit/auditentry/add/").status_code == 403
    assert (
        admin_client.post(
            f"/admin/audit/auditentry/{entry.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
