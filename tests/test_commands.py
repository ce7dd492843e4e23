"""Management commands: enrollment and host (apitoken: tests/test_api_tokens.py)."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from hosts.models import Enrollment, Host
from rules.services import RuleInput, rule_create
from tests.agent import SyncFailed

SHA_A = "a" * 64
SHA_B = "b" * 64


def run(*args) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().splitlines()


def create_enrollment(name, *options) -> str:
    lines = run("enrollment", "create", name, *options)
    assert lines, "no output"
    return lines[-1]


# --- enrollment -----------------------------------------------------------------------------------


def test_enrollment_create_prints_a_working_secret_last(db, make_agent):
    secret = create_enrollment("laptops")
    assert secret == secret.strip() and " " not in secret and len(secret) >= 32
    enrollment = Enrollment.objects.get(name="laptops")
    assert secret.startswith(enrollment.secret_prefix)
    assert secret not in enrollment.secret_hash  # only a hash is stored

    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    agent = make_agent(secret=secret)
    agent.sync()
    assert set(agent.rules) == {("BINARY", SHA_A)}
    assert Host.objects.get(machine_id=agent.machine_id).enrollment == enrollment


def test_each_enrollment_gets_its_own_secret(db):
    assert create_enrollment("one") != create_enrollment("two")


def test_enrollment_create_with_tags_and_mode(db, make_agent):
    secret = create_enrollment("kiosks", "--tag", "Kiosk", "--tag", "lobby", "--mode", "LOCKDOWN")
    enrollment = Enrollment.objects.get(name="kiosks")
    assert sorted(enrollment.tags.values_list("name", flat=True)) == ["kiosk", "lobby"]
    assert enrollment.client_mode == "LOCKDOWN"

    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST", tags=("kiosk",)))
    rule_create(data=RuleInput("BINARY", SHA_B, "BLOCKLIST", tags=("other",)))
    agent = make_agent(secret=secret)
    agent.sync()
    assert set(agent.rules) == {("BINARY", SHA_A)}
    assert agent.client_mode == "LOCKDOWN"


@pytest.mark.parametrize("mode", ["MONITOR", "LOCKDOWN"])
def test_enrollment_mode_reaches_the_agent(db, make_agent, mode):
    secret = create_enrollment(f"mode-{mode.lower()}", "--mode", mode)
    agent = make_agent(secret=secret)
    agent.client_mode = "STANDALONE"
    agent.sync()
    assert agent.client_mode == mode


def test_enrollment_create_rejects_bad_mode_and_tag(db):
    with pytest.raises(CommandError):
        run("enrollment", "create", "bad-mode", "--mode", "lockdown")
    with pytest.raises(CommandError):
        run("enrollment", "create", "bad-tag", "--tag", "Not A Tag")
    assert not Enrollment.objects.exists()


def test_enrollment_duplicate_name_is_an_error(db):
    secret = create_enrollment("laptops")
    with pytest.raises(CommandError, match="laptops"):
        run("enrollment", "create", "laptops")
    assert Enrollment.objects.filter(name="laptops").count() == 1
    assert Enrollment.objects.get(name="laptops").secret_prefix == secret[:8]


def test_enrollment_list(db):
    assert "No enrollments" in "\n".join(run("enrollment", "list"))
    secret = create_enrollment("laptops", "--tag", "eng")
    create_enrollment("kiosks", "--mode", "LOCKDOWN")
    run("enrollment", "revoke", "kiosks")
    lines = run("enrollment", "list")
    assert len(lines) == 2
    kiosks, laptops = lines  # sorted by name
    assert kiosks.startswith("kiosks\t") and "revoked" in kiosks and "LOCKDOWN" in kiosks
    assert laptops.startswith("laptops\t") and "active" in laptops and "eng" in laptops
    assert secret[:8] in laptops
    assert secret not in "\n".join(lines)  # the full secret is never shown again


def test_enrollment_revoke_refuses_its_agents(db, make_agent):
    secret = create_enrollment("laptops")
    other = create_enrollment("desktops")
    agent = make_agent(secret=secret)
    bystander = make_agent(secret=other)
    agent.sync()
    bystander.sync()

    lines = run("enrollment", "revoke", "laptops")
    assert "laptops" in lines[-1]
    assert Enrollment.objects.get(name="laptops").revoked_at is not None

    with pytest.raises(SyncFailed) as failed:
        agent.sync()
    assert failed.value.stage == "preflight"
    assert failed.value.status == 401
    # A new machine with the revoked secret is refused too; other enrollments still work.
    with pytest.raises(SyncFailed) as failed:
        make_agent(secret=secret).sync()
    assert failed.value.status == 401
    bystander.sync()


def test_enrollment_revoke_unknown_is_an_error(db):
    with pytest.raises(CommandError, match="nope"):
        run("enrollment", "revoke", "nope")


def test_enrollment_needs_an_action(db):
    with pytest.raises(CommandError):
        run("enrollment")


# --- host -----------------------------------------------------------------------------------------


@pytest.fixture
def synced(agent):
    rule_create(data=RuleInput("BINARY", SHA_A, "BLOCKLIST"))
    agent.sync()
    assert agent.sync().sync_type == "NORMAL"
    return agent


def requested(agent) -> str:
    return Host.objects.get(machine_id=agent.machine_id).clean_sync_requested


def test_host_clean_sync(synced):
    lines = run("host", "clean-sync", synced.machine_id)
    assert synced.machine_id in lines[-1] and "CLEAN" in lines[-1]
    assert requested(synced) == "CLEAN"
    synced.rules[("BINARY", SHA_B)] = {
        "policy": "ALLOWLIST",
        "custom_msg": "",
        "custom_url": "",
        "cel_expr": "",
    }
    assert synced.sync().sync_type == "CLEAN"
    assert set(synced.rules) == {("BINARY", SHA_A)}
    assert requested(synced) == ""
    assert synced.sync().sync_type == "NORMAL"


def test_host_clean_sync_all(synced):
    run("host", "clean-sync", synced.machine_id, "--all")
    assert requested(synced) == "CLEAN_ALL"
    assert synced.sync().sync_type == "CLEAN_ALL"
    assert requested(synced) == ""


def test_host_clean_sync_cancel(synced):
    run("host", "clean-sync", synced.machine_id, "--all")
    lines = run("host", "clean-sync", synced.machine_id, "--cancel")
    assert "withdrawn" in lines[-1]
    assert requested(synced) == ""
    assert synced.sync().sync_type == "NORMAL"


def test_host_clean_sync_all_and_cancel_exclude_each_other(synced):
    with pytest.raises(CommandError):
        run("host", "clean-sync", synced.machine_id, "--all", "--cancel")
    assert requested(synced) == ""


def test_host_tags(synced, analyst_api):
    rule_create(data=RuleInput("BINARY", SHA_B, "ALLOWLIST", tags=("eng",)))
    lines = run("host", "tags", synced.machine_id, "Eng", "qa")
    assert lines[-1] == f"{synced.machine_id}: tags eng, qa"
    assert analyst_api.get(f"/api/v1/hosts/{synced.machine_id}/").json()["tags"] == ["eng", "qa"]
    synced.sync()
    assert set(synced.rules) == {("BINARY", SHA_A), ("BINARY", SHA_B)}

    lines = run("host", "tags", synced.machine_id)
    assert lines[-1] == f"{synced.machine_id}: tags -"
    synced.sync()
    assert set(synced.rules) == {("BINARY", SHA_A)}


def test_host_tags_rejects_invalid_tag(synced, analyst_api):
    run("host", "tags", synced.machine_id, "eng")
    with pytest.raises(CommandError):
        run("host", "tags", synced.machine_id, "qa", "Not A Tag")
    assert analyst_api.get(f"/api/v1/hosts/{synced.machine_id}/").json()["tags"] == ["eng"]


def test_host_show_and_list(synced, make_agent):
    run("host", "tags", synced.machine_id, "eng")
    text = "\n".join(run("host", "show", synced.machine_id))
    host = Host.objects.get(machine_id=synced.machine_id)
    assert synced.machine_id in text
    assert host.hostname and host.hostname in text
    assert host.serial_number in text
    assert "default-enrollment" in text
    assert "eng" in text
    assert "2026.8.1" in text

    second = make_agent()
    second.sync()
    lines = run("host", "list")
    assert len(lines) == 2
    assert sorted(line.split("\t")[0] for line in lines) == sorted(
        [synced.machine_id, second.machine_id]
    )


@pytest.mark.parametrize(
    "args",
    [
        ("host", "show", "NO-SUCH-MACHINE"),
        ("host", "clean-sync", "NO-SUCH-MACHINE"),
        ("host", "clean-sync", "NO-SUCH-MACHINE", "--all"),
        ("host", "tags", "NO-SUCH-MACHINE", "eng"),
        ("host", "list", "NO-SUCH-MACHINE"),
        ("host",),
    ],
)
def test_host_unknown_machine_or_bad_arguments(db, args):
    with pytest.raises(CommandError):
        run(*args)
