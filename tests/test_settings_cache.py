"""Profiles and tag rules are kept in memory under a token that database triggers change with
every write to their tables, whoever writes (hosts.settings_cache)."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from hosts.models import ConfigurationProfile, Host, SettingsVersion, Tag, TagRule
from hosts.settings_cache import settings_snapshot


def token() -> str:
    return SettingsVersion.objects.get(pk=1).token


@pytest.mark.parametrize(
    "change",
    [
        lambda: ConfigurationProfile.objects.create(name="p1", batch_size=10),
        lambda: ConfigurationProfile.objects.filter(is_default=True).update(batch_size=20),
        lambda: ConfigurationProfile.objects.filter(is_default=False).delete(),
        lambda: ConfigurationProfile.objects.get(is_default=True).tags.add(
            Tag.objects.create(name="eng")
        ),
        lambda: TagRule.objects.create(
            tag=Tag.objects.create(name="ops"), fact="hostname", operator="equals", value="x"
        ),
    ],
    ids=["profile insert", "profile update", "profile delete", "profile tags", "tag rule"],
)
def test_every_write_changes_the_token(db, change):
    ConfigurationProfile.objects.create(name="existing")
    before = token()
    change()
    assert token() != before


def test_profile_hosts_change_the_token(agent):
    agent.preflight()
    profile = ConfigurationProfile.objects.create(name="one host")
    before = token()
    profile.hosts.add(Host.objects.get())
    assert token() != before


def test_other_writes_leave_it(agent):
    before = token()
    agent.sync()
    Tag.objects.create(name="unused")
    assert token() == before


def test_a_rolled_back_change_restores_the_token(db):
    before = token()
    with pytest.raises(RuntimeError), transaction.atomic():
        ConfigurationProfile.objects.create(name="gone", batch_size=5)
        assert token() != before
        raise RuntimeError
    assert token() == before


def test_an_unchanged_token_reads_nothing(db):
    current = token()
    settings_snapshot(current)
    with CaptureQueriesContext(connection) as queries:
        snapshot = settings_snapshot(current)
    assert len(queries) == 0
    assert snapshot.token == current


def test_a_profile_written_outside_the_services_applies_at_the_next_preflight(agent):
    assert agent.preflight().batch_size == 50
    ConfigurationProfile.objects.filter(is_default=True).update(batch_size=7)
    assert agent.preflight().batch_size == 7


def test_a_tag_rule_written_outside_the_services_applies_at_the_next_preflight(agent):
    agent.preflight()
    TagRule.objects.create(
        tag=Tag.objects.create(name="alices"), fact="primary_user", operator="equals", value="alice"
    )
    profile = ConfigurationProfile.objects.create(name="for alice", batch_size=9)
    profile.tags.add(Tag.objects.get(name="alices"))
    assert agent.preflight().batch_size == 9


def test_configurations_are_memoised_per_scope(db):
    snapshot = settings_snapshot(token())
    first = snapshot.configuration({1, 2}, set(), enrollment_mode="LOCKDOWN", host_mode_override="")
    again = snapshot.configuration({2, 1}, set(), enrollment_mode="LOCKDOWN", host_mode_override="")
    other = snapshot.configuration({1}, set(), enrollment_mode="", host_mode_override="")
    assert first is again
    assert first.client_mode == "LOCKDOWN" and other.client_mode == "MONITOR"


def test_without_a_token_nothing_is_cached(db):
    SettingsVersion.objects.all().delete()
    first = settings_snapshot(None)
    ConfigurationProfile.objects.filter(is_default=True).update(batch_size=3)
    second = settings_snapshot(None)
    assert first is not second
    default = next(p for p in second.profiles.values() if p.is_default)
    assert default.batch_size == 3
