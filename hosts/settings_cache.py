"""Configuration profiles and tag rules kept in memory for the sync path.

A preflight needs every profile that could apply to its host and every tag rule. They change
rarely (an administrator edits them) and are read by every sync, so each process keeps them
under the settings token (hosts.models.SettingsVersion), which triggers change in the
transaction of any change to those tables. The sync path reads the token in the statement it
runs anyway (hosts.selectors.sync_context); an unchanged token means the memory is current,
a changed one reloads it (two queries), so a change applies at each host's next preflight
exactly as without the cache.

Resolved configurations are memoised per (tags, host profiles, enrollment mode, host override):
most hosts of a fleet share a handful of those.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from . import tagging
from .models import ConfigurationProfile
from .selectors import (
    SyncConfiguration,
    configuration_layers,
    order_profiles,
    resolve_configuration,
)

MEMO_SIZE = 4096


@dataclass
class SettingsSnapshot:
    token: str | None
    profiles: dict[int, ConfigurationProfile]
    defaults: list[int]
    by_tag: dict[int, list[int]]
    conditions: list[tagging.Condition]
    memo: OrderedDict = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def configuration(
        self,
        tag_ids,
        host_profile_ids,
        *,
        enrollment_mode: str,
        host_mode_override: str,
    ) -> SyncConfiguration:
        """What hosts.selectors.configuration_for_host computes, from memory."""
        key = (
            frozenset(tag_ids),
            frozenset(host_profile_ids),
            enrollment_mode or "",
            host_mode_override or "",
        )
        with self.lock:
            found = self.memo.get(key)
            if found is not None:
                self.memo.move_to_end(key)
                return found
        wanted = set(self.defaults) | set(host_profile_ids)
        for tag in key[0]:
            wanted.update(self.by_tag.get(tag, ()))
        profiles = [self.profiles[pk] for pk in wanted if pk in self.profiles]
        linked = {pk for pk in host_profile_ids if pk in self.profiles}
        configuration = resolve_configuration(
            configuration_layers(
                order_profiles(profiles, linked),
                enrollment_mode=enrollment_mode,
                host_mode_override=host_mode_override,
            )
        )
        with self.lock:
            self.memo[key] = configuration
            if len(self.memo) > MEMO_SIZE:
                self.memo.popitem(last=False)
        return configuration


def _load(token: str | None) -> SettingsSnapshot:
    profiles = list(ConfigurationProfile.objects.prefetch_related("tags"))
    by_tag: dict[int, list[int]] = {}
    for profile in profiles:
        for tag in profile.tags.all():
            by_tag.setdefault(tag.pk, []).append(profile.pk)
    return SettingsSnapshot(
        token=token,
        profiles={p.pk: p for p in profiles},
        defaults=[p.pk for p in profiles if p.is_default],
        by_tag=by_tag,
        conditions=tagging.conditions(),
    )


_current: SettingsSnapshot | None = None


def settings_snapshot(token: str | None) -> SettingsSnapshot:
    """The profiles and tag rules as of `token` (read from the database in the caller's
    statement). Without a token (its row is missing) nothing is cached."""
    global _current
    snapshot = _current
    if token is not None and snapshot is not None and snapshot.token == token:
        return snapshot
    snapshot = _load(token)
    if token is not None:
        _current = snapshot
    return snapshot
