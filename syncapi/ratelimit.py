"""Sync rate limits: per machine and per client address, checked before any database work.

Fixed windows aligned to the clock (a "600/min" window is one calendar minute), counted either
in the web process (`memory://`, the default: a lock and two dict updates, no thread, no I/O)
or in Redis (`redis://...`: one pipelined round trip for both counters, exact across every web
process). With the memory storage each process counts alone, so with N processes a client can
reach up to N times a limit: still a bound on what it costs.

* **Per machine** is the machine id of the URL *with the credential the request presents* (a
  digest of its bearer secret, or of the client-certificate issuer): the machine id is not
  authenticated before the database is asked, so a limit by machine id alone would let anyone
  who knows a Mac's id spend its budget and keep it from syncing. Holders of the enrollment
  secret can, but they can impersonate the Mac anyway. Not per secret alone: every Mac of an
  enrollment shares it.
* **Per address** is the client's address (santaadmin.clientaddr: X-Forwarded-For only with
  trusted proxies); IPv6 addresses count by their /64, which one client usually holds whole.

A refused request counts against neither limit (the machine limit is checked before the
address limit is counted, so one Mac looping behind a NAT does not spend its neighbours'
budget); a refusal ends with its window, whatever the client sends meanwhile. When Redis cannot
be reached, requests are let through and the limiter pauses for PAUSE_SECONDS: a rate limit
must not take syncing down.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from redis.exceptions import RedisError

from santaadmin.clientaddr import client_address

logger = logging.getLogger("santaadmin.sync")

PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600}
PERIODS |= {"hour": 3600, "d": 86400, "day": 86400}
PERIOD_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
PAUSE_SECONDS = 10
REDIS_TIMEOUT = 0.25  # seconds: a sync request never waits long on a limiter that is down
KEY_PREFIX = "santaadmin:sync-limit"

clock = time.time  # tests move it instead of sleeping


@dataclass(frozen=True)
class Rate:
    setting: str
    amount: int
    period: int

    def describe(self) -> str:
        return f"{self.amount} per {PERIOD_NAMES[self.period]}"


@dataclass(frozen=True)
class Refusal:
    detail: str
    retry_after: int


@functools.lru_cache(maxsize=32)
def parse_rate(setting: str, text: str) -> Rate | None:
    """`"600/min"` → Rate; empty → None (the settings module checked the format)."""
    if not text:
        return None
    amount, _, unit = text.partition("/")
    return Rate(setting, int(amount), PERIODS[unit])


class MemoryCounter:
    """Counters of the current window of each period in this process. When a window ends its
    whole table is dropped at once, so expiry costs nothing per key and memory holds only the
    keys seen in one window (bounded by the per-address limit times the addresses seen)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[int, tuple[int, dict[str, int]]] = {}

    def hit(self, now: float, checks: list[tuple[Rate, str]]) -> Rate | None:
        """Count one request against every (rate, key) unless one of them is full: then
        count nothing and return that rate."""
        with self._lock:
            counted = []
            for rate, key in checks:
                index = int(now // rate.period)
                window = self._windows.get(rate.period)
                if window is None or window[0] != index:
                    window = self._windows[rate.period] = (index, {})
                table = window[1]
                count = table.get(key, 0)
                if count >= rate.amount:
                    return rate
                counted.append((table, key, count + 1))
            for table, key, count in counted:
                table[key] = count
        return None

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()


class RedisCounter:
    """The same windows in Redis: INCR and EXPIRE of both keys in one MULTI (one round trip);
    a refused request gives its counts back (a second round trip, only when refusing)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
        )

    def hit(self, now: float, checks: list[tuple[Rate, str]]) -> Rate | None:
        names = []
        pipe = self.client.pipeline(transaction=True)
        for rate, key in checks:
            name = f"{KEY_PREFIX}:{rate.period}:{int(now // rate.period)}:{key}"
            names.append(name)
            pipe.incr(name)
            pipe.expire(name, rate.period + 1)
        counts = pipe.execute()[0::2]
        for (rate, _), count in zip(checks, counts, strict=True):
            if count > rate.amount:
                undo = self.client.pipeline(transaction=True)
                for name in names:
                    undo.decr(name)
                undo.execute()
                return rate
        return None


@dataclass(frozen=True)
class Config:
    """The settings the limiter uses, read once: Django's settings object costs about a
    microsecond per attribute read, several times this limiter's own work."""

    per_machine: Rate | None
    per_address: Rate | None
    storage_uri: str
    num_proxies: int
    cert_meta_name: str

    @classmethod
    def from_settings(cls) -> Config:
        header = settings.SYNC_CLIENT_CERT_HEADER
        return cls(
            per_machine=parse_rate(
                "SYNC_RATE_LIMIT_PER_MACHINE", settings.SYNC_RATE_LIMIT_PER_MACHINE
            ),
            per_address=parse_rate(
                "SYNC_RATE_LIMIT_PER_ADDRESS", settings.SYNC_RATE_LIMIT_PER_ADDRESS
            ),
            storage_uri=settings.SYNC_RATE_LIMIT_STORAGE,
            num_proxies=settings.NUM_PROXIES,
            cert_meta_name="HTTP_" + header.upper().replace("-", "_") if header else "",
        )


SETTINGS = {
    "SYNC_RATE_LIMIT_PER_MACHINE",
    "SYNC_RATE_LIMIT_PER_ADDRESS",
    "SYNC_RATE_LIMIT_STORAGE",
    "NUM_PROXIES",
    "SYNC_CLIENT_CERT_HEADER",
}


class SyncRateLimiter:
    def __init__(self) -> None:
        self._storages: dict[str, MemoryCounter | RedisCounter] = {}
        self._paused_until = 0.0
        self._config: Config | None = None

    def forget_settings(self) -> None:
        self._config = None

    def storage(self, uri: str) -> MemoryCounter | RedisCounter:
        storage = self._storages.get(uri)
        if storage is None:
            storage = MemoryCounter() if uri == "memory://" else RedisCounter(uri)
            self._storages[uri] = storage
        return storage

    def reset(self) -> None:
        """Forget every in-process count and pause (tests; Redis keys expire on their own)."""
        for storage in self._storages.values():
            if isinstance(storage, MemoryCounter):
                storage.reset()
        self._paused_until = 0.0
        self._config = None

    def refuse(self, request: HttpRequest, machine_id: str) -> Refusal | None:
        """None when the request may go on (and it was counted); else why not, having counted
        nothing."""
        config = self._config
        if config is None:
            config = self._config = Config.from_settings()
        checks = []
        if config.per_machine is not None:
            credential = request.META.get("HTTP_AUTHORIZATION", "")
            if not credential and config.cert_meta_name:
                credential = request.META.get(config.cert_meta_name, "")
            checks.append((config.per_machine, f"m:{machine_id}:{credential_digest(credential)}"))
        if config.per_address is not None:
            address = client_address(request, config.num_proxies)
            checks.append((config.per_address, f"a:{address_bucket(address)}"))
        if not checks:
            return None
        now = clock()
        if now < self._paused_until:
            return None
        try:
            refused = self.storage(config.storage_uri).hit(now, checks)
        except (RedisError, OSError) as exc:
            self._paused_until = now + PAUSE_SECONDS
            logger.warning(
                "Sync rate limits not applied for %d s, storage unreachable: %s",
                PAUSE_SECONDS,
                exc,
            )
            return None
        if refused is None:
            return None
        retry_after = max(1, math.ceil((now // refused.period + 1) * refused.period - now))
        whom = "this machine" if refused.setting.endswith("MACHINE") else "this address"
        return Refusal(
            f"More than {refused.describe()} sync requests from {whom} "
            f"({refused.setting}); retry in {retry_after} s.",
            retry_after,
        )


@functools.lru_cache(maxsize=1024)
def credential_digest(credential: str) -> str:
    """A short digest of what the request authenticates with (its Authorization header, or
    the client-certificate issuer), never the secret itself, which would otherwise sit in
    Redis. Cached: a fleet presents a handful of enrollment secrets."""
    if not credential:
        return "-"
    return hashlib.blake2b(credential.encode(), digest_size=8).hexdigest()


@functools.lru_cache(maxsize=4096)
def _ipv6_bucket(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def address_bucket(address: str) -> str:
    """What the per-address limit counts by: an IPv4 address, or an IPv6 address's /64."""
    if ":" not in address:
        return address
    return _ipv6_bucket(address)


limiter = SyncRateLimiter()


@receiver(setting_changed)
def _settings_changed(*, setting, **kwargs) -> None:
    if setting in SETTINGS:
        limiter.forget_settings()
