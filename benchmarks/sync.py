"""The Santa sync protocol against a live server, as production runs it (`manage.py serve`:
granian), on PostgreSQL when DATABASE_URL is set, else on SQLite:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/santaadmin_sync_bench \\
    .venv/bin/python benchmarks/sync.py [--write] [--duration 20] [--only wrk,fleet,clean,ingest]

`make bench` runs it with that DATABASE_URL. A PostgreSQL database must be named `*_bench`: it is
created when missing and emptied at the start (nothing else in the cluster is touched). Without
DATABASE_URL the server runs in embedded mode on SQLite in a temporary directory.

Sections (each a table in docs/benchmarks.md between `<!-- sync:start -->` and `<!-- sync:end
-->` with `--write`):

* **wrk**: every stage under wrk (Debian's `wrk`): 2 threads, 16 connections, `--duration`
  seconds, 64 machines each POSTing its own deflate-compressed steady-state body with the
  enrollment secret (benchmarks/sync.lua). Event upload sends one new event per request.
  Requests/s, p50/p99, and the CPU each process group used per request.
* **fleet**: full four-stage syncs per second by this module's own agent simulator (16
  concurrent agents over a fleet of `--fleet` machines, 5,000 rules, events in 20% of syncs).
* **clean**: the first clean sync of 20,000 rules to a new host: time, pages, and the growth of
  the serving worker's peak memory.
* **ingest**: events per second uploaded in batches of 50 under wrk, then the same batches
  replayed (deduplicated: nothing new may be stored).
* **levers** (PostgreSQL): preflight, event upload and postflight under wrk again, on a server
  restarted with one switchable lever of the hot path off at a time (prepared statements,
  write-behind of host liveness, deferred event storage), so each one's gain is measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.docs import cpu_model, write_section  # noqa: E402
from benchmarks.fanout import (  # noqa: E402
    bench_database_name,
    prepare_database,
    source_description,
)

START, END = "<!-- sync:start -->", "<!-- sync:end -->"
SECTIONS = ("wrk", "fleet", "clean", "ingest", "levers")
STAGES = ("preflight", "eventupload", "ruledownload", "postflight")
STEADY_RULES = 5_000
CLEAN_RULES = 20_000
WRK_MACHINES = 64
EVENT_SHARE = 0.2
BATCH = 50
LUA = ROOT / "benchmarks" / "sync.lua"
BIN = Path(sys.executable).parent
BENCH_RATE_LIMIT = "100000000/min"
SYNC_LIMITS_NOTE = (
    "Sync rate limits on, counted in each web process's memory, at 100,000,000 requests a "
    "minute per machine and per address so that they never trip."
)


# --- environment and server ---------------------------------------------------------------------


def server_environment(var_dir: Path) -> dict[str, str]:
    """The variables the server and this process run with: production settings on PostgreSQL
    when DATABASE_URL is set, embedded SQLite (in `var_dir`) otherwise."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "santaadmin.settings")
    env["LOG_LEVEL"] = "WARNING"
    env["DEBUG"] = "0"
    # 64 machines at >1,000 requests/s from 127.0.0.1 are far beyond the sync rate limits:
    # counted (their cost is part of every figure) at rates no run reaches (SYNC_LIMITS_NOTE).
    env["SYNC_RATE_LIMIT_PER_MACHINE"] = BENCH_RATE_LIMIT
    env["SYNC_RATE_LIMIT_PER_ADDRESS"] = BENCH_RATE_LIMIT
    env["SYNC_RATE_LIMIT_STORAGE"] = "memory://"
    if env.get("DATABASE_URL"):
        env.setdefault("SECRET_KEY", "bench-only-" + "k" * 40)
        env.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
        # Fan-out messages go to a bench-only Redis database (purged at the end); no worker
        # runs during the measurements, exactly as a web node publishes and moves on.
        env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
        env.setdefault("SECURE_SSL_REDIRECT", "0")
    else:
        env["SANTAADMIN_VAR_DIR"] = str(var_dir)
    return env


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    django.setup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The production web server as the README starts it: `manage.py serve` (granian), with
    its defaults or WEB_CONCURRENCY / WEB_THREADS from the environment."""

    def __init__(self, env: dict[str, str]):
        self.port = free_port()
        self.env = {**env, "WEB_BIND": f"127.0.0.1:{self.port}"}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(  # noqa: S603
            [str(BIN / "python"), "manage.py", "serve", "--", "--log-level", "warning"],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status in (200, 503):
                    time.sleep(1.0)  # every worker booted
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start within 60 s")

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        return descendants(self.process.pid)


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *descendants(kid)]
    return found


# --- CPU accounting -----------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _process_groups(server: Server) -> dict[str, list[int]]:
    postgres = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    postgres.append(int(entry.name))
            except OSError:
                continue
    return {"server": [server.process.pid, *server.worker_pids()], "postgres": postgres}


class CpuSample:
    """CPU seconds used by the server, PostgreSQL and the load generator between two points.

    The load generator (`children`: wrk or the simulator processes) is counted with
    getrusage(RUSAGE_CHILDREN) once it has exited and been waited for; `used()` must be called
    after that."""

    def __init__(self, server: Server, children: str | None = None):
        self.server, self.children = server, children
        self.start = self._read()
        self.rusage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.wall = time.monotonic()

    def _read(self) -> dict[str, dict[int, float]]:
        groups = _process_groups(self.server)
        return {name: {pid: _cpu_seconds(pid) for pid in pids} for name, pids in groups.items()}

    def used(self) -> dict[str, float]:
        end = self._read()
        result = {}
        for name, pids in end.items():
            before = self.start.get(name, {})
            result[name] = sum(max(0.0, v - before.get(pid, 0.0)) for pid, v in pids.items())
        if self.children:
            now = resource.getrusage(resource.RUSAGE_CHILDREN)
            result[self.children] = (now.ru_utime + now.ru_stime) - (
                self.rusage.ru_utime + self.rusage.ru_stime
            )
        result["wall"] = time.monotonic() - self.wall
        return result


# --- loading ------------------------------------------------------------------------------------


def load_rules(count: int, start: int = 0) -> None:
    """`count` rules for everyone through rules_bulk_create: mostly BINARY, some CERTIFICATE,
    TEAMID and SIGNINGID, a few ALLOWLIST_COMPILER, one transaction."""
    import hashlib

    from rules.services import RuleInput, rules_bulk_create

    rng = random.Random(start)  # noqa: S311 - test data
    items = []
    for n in range(start, start + count):
        digest = hashlib.sha256(f"rule-{n}".encode()).hexdigest()
        roll = rng.random()
        if roll < 0.85:
            rule_type, identifier = "BINARY", digest
        elif roll < 0.93:
            rule_type, identifier = "CERTIFICATE", digest
        elif roll < 0.97:
            rule_type, identifier = (
                "TEAMID",
                "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ2345", k=10)),
            )
        else:
            rule_type, identifier = (
                "SIGNINGID",
                f"{''.join(rng.choices('ABCDEFGHJK2345', k=10))}:com.example.app{n}",
            )
        policy = (
            "ALLOWLIST_COMPILER"
            if rule_type == "BINARY" and rng.random() < 0.01
            else ("BLOCKLIST" if rng.random() < 0.2 else "ALLOWLIST")
        )
        items.append(RuleInput(rule_type=rule_type, identifier=identifier, policy=policy))
    rules_bulk_create(items=items, actor=None)


# --- a lean agent simulator ---------------------------------------------------------------------
# tests/agent.py models the agent exactly (protobuf parsing, rule validation) and is too slow to
# drive hundreds of syncs a second from the same two cores; this one sends the same requests
# (proto field names, deflate, bearer secret) and keeps only what a steady-state sync needs.

COUNT_FIELDS = {
    "BINARY": "binary_rule_count",
    "CERTIFICATE": "certificate_rule_count",
    "TEAMID": "teamid_rule_count",
    "SIGNINGID": "signingid_rule_count",
    "CDHASH": "cdhash_rule_count",
}


def deflate(document: dict) -> bytes:
    return zlib.compress(json.dumps(document, separators=(",", ":")).encode())


@dataclass
class Machine:
    machine_id: str
    serial: int
    counts: dict = field(default_factory=dict)
    event_counter: int = 0

    def facts(self) -> dict:
        return {
            "machine_id": self.machine_id,
            "serial_num": f"C02BENCH{self.serial:05d}",
            "hostname": f"mac-{self.serial}.example.com",
            "os_version": "15.1",
            "os_build": "24B83",
            "model_identifier": "MacBookPro18,3",
            "santa_version": "2026.8.1",
            "primary_user": f"user{self.serial % 500}",
            "primary_user_groups": ["staff"],
            "client_mode": "MONITOR",
            "sip_status": 111,
        }

    def preflight_body(self, clean: bool = False) -> bytes:
        body = {**self.facts(), **self.counts, "rules_hash": f"bench-{self.machine_id}"}
        if clean:
            body["request_clean_sync"] = True
        return deflate(body)

    def ruledownload_body(self, cursor: str = "") -> bytes:
        body = {"machine_id": self.machine_id}
        if cursor:
            body["cursor"] = cursor
        return deflate(body)

    def postflight_body(self, received: int, sync_type: str) -> bytes:
        return deflate(
            {
                "machine_id": self.machine_id,
                "rules_received": received,
                "rules_processed": received,
                "sync_type": sync_type,
                "rules_hash": f"bench-{self.machine_id}",
            }
        )

    def events_body(self, count: int, *, base_time: int, sha_pool: list[str]) -> bytes:
        events = []
        for _ in range(count):
            self.event_counter += 1
            n = self.event_counter
            events.append(
                {
                    "file_sha256": sha_pool[(self.serial * 7919 + n) % len(sha_pool)],
                    "file_path": "/Applications/Tool.app/Contents/MacOS",
                    "file_name": f"tool{n % 50}",
                    "executing_user": f"user{self.serial % 500}",
                    "execution_time": base_time + n * 0.001 + self.serial,
                    "decision": "BLOCK_UNKNOWN" if n % 3 else "ALLOW_UNKNOWN",
                    "pid": 1000 + n % 30000,
                    "ppid": 1,
                    "parent_name": "launchd",
                    "team_id": "EQHXZ8M8AV",
                    "signing_id": "EQHXZ8M8AV:com.example.tool",
                    "logged_in_users": [f"user{self.serial % 500}"],
                }
            )
        return deflate({"machine_id": self.machine_id, "events": events})


class Client:
    """One keep-alive connection (reopened when the server closes it)."""

    def __init__(self, url: str, secret: str):
        host, port = url.removeprefix("http://").split(":")
        self.connection = HTTPConnection(host, int(port), timeout=60)
        self.headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "deflate",
            "Authorization": f"Bearer {secret}",
            "User-Agent": "santactl-sync/2026.8.1",
        }

    def post(self, stage: str, machine_id: str, body: bytes) -> dict:
        try:
            self.connection.request("POST", f"/sync/{stage}/{machine_id}", body, self.headers)
            response = self.connection.getresponse()
            data = response.read()
        except (ConnectionError, OSError):
            self.connection.close()
            raise
        if response.will_close:
            self.connection.close()
        if response.status != 200:
            raise RuntimeError(f"{stage} {machine_id}: HTTP {response.status} {data[:300]!r}")
        return json.loads(data) if data else {}


def full_sync(
    client: Client, machine: Machine, *, clean: bool = False, events: bytes | None = None
):
    """One four-stage sync; returns (sync type, rules received, pages)."""
    answer = client.post("preflight", machine.machine_id, machine.preflight_body(clean))
    sync_type = answer.get("sync_type", "NORMAL")
    if events is not None and sync_type == "NORMAL":
        client.post("eventupload", machine.machine_id, events)
    cursor, received, pages = "", 0, 0
    counts = dict(machine.counts) if sync_type == "NORMAL" else {}
    while True:
        page = client.post("ruledownload", machine.machine_id, machine.ruledownload_body(cursor))
        pages += 1
        for rule in page.get("rules", ()):
            received += 1
            name = COUNT_FIELDS[rule["rule_type"]]
            delta = -1 if rule["policy"] == "REMOVE" else 1
            if rule["policy"] == "REMOVE" and rule["identifier"] == "0" * 64:
                continue  # the empty-set sentinel of a clean sync
            counts[name] = counts.get(name, 0) + delta
            if rule["policy"] == "ALLOWLIST_COMPILER":
                counts["compiler_rule_count"] = counts.get("compiler_rule_count", 0) + 1
        cursor = page.get("cursor", "")
        if not cursor:
            break
    if received:
        machine.counts = counts
    client.post("postflight", machine.machine_id, machine.postflight_body(received, sync_type))
    return sync_type, received, pages


# --- wrk ----------------------------------------------------------------------------------------


def write_requests(path: Path, requests: list[tuple[str, bytes]]) -> None:
    with path.open("wb") as f:
        f.write(f"{len(requests)}\n".encode())
        for url, body in requests:
            f.write(f"{len(url.encode())} {len(body)}\n".encode())
            f.write(url.encode())
            f.write(body)


@dataclass
class WrkResult:
    stage: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu: dict[str, float]
    fewest_sent: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def cpu_ms(self, group: str) -> float:
        return 1000 * self.cpu.get(group, 0.0) / max(self.requests, 1)


def run_wrk(
    server: Server,
    secret: str,
    stage: str,
    requests: list[tuple[str, bytes]],
    duration: int,
    work: Path,
) -> WrkResult:
    request_file = work / f"{stage}.requests"
    write_requests(request_file, requests)
    env = {
        **os.environ,
        "BENCH_REQUESTS": str(request_file),
        "BENCH_SECRET": secret,
        "BENCH_THREADS": "2",
    }
    command = [
        "wrk",
        "-t2",
        "-c16",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        server.url,
    ]
    process = subprocess.Popen(  # noqa: S603
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sample = CpuSample(server, "wrk")
    out, err = process.communicate()
    cpu = sample.used()
    match = re.search(r"^BENCH_JSON (\{.*\})$", out, re.M)
    if process.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out}\n{err}")
    data = json.loads(match.group(1))
    errors = sum(
        data[k] for k in ("non200", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    if err.strip():
        print(err.strip()[:1000], file=sys.stderr)
    return WrkResult(
        stage,
        data["requests"],
        data["duration_us"] / 1e6,
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
        errors,
        cpu,
        data["fewest_sent"],
    )


# --- the sections -------------------------------------------------------------------------------


def enroll(server: Server, secret: str, machines: list[Machine], workers: int = 8) -> None:
    """Register every machine and take it through its first clean sync of the rule set."""
    queue = list(machines)
    lock = threading.Lock()
    failures = []

    def work():
        client = Client(server.url, secret)
        while True:
            with lock:
                if not queue:
                    return
                machine = queue.pop()
            try:
                sync_type, _, _ = full_sync(client, machine)
                assert sync_type in ("CLEAN", "CLEAN_ALL"), sync_type
                again, received, _ = full_sync(client, machine)
                assert (again, received) == ("NORMAL", 0), (again, received)
            except Exception as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} enrollments failed, first: {failures[0]}")


def wrk_bodies(machines, duration) -> dict[str, list[tuple[str, bytes]]]:
    """Each stage's requests for wrk: steady-state bodies of the first WRK_MACHINES machines;
    for event upload one new event per request, enough for 2,500 requests/s."""
    wrk_machines = machines[:WRK_MACHINES]
    bodies = {
        "preflight": [
            (f"/sync/preflight/{m.machine_id}", m.preflight_body()) for m in wrk_machines
        ],
        "ruledownload": [
            (f"/sync/ruledownload/{m.machine_id}", m.ruledownload_body()) for m in wrk_machines
        ],
        "postflight": [
            (f"/sync/postflight/{m.machine_id}", m.postflight_body(0, "NORMAL"))
            for m in wrk_machines
        ],
    }
    shas = sha_pool(2_000)
    per_machine = max(1, 2_500 * duration // len(wrk_machines))
    base = int(time.time()) - 86_400
    bodies["eventupload"] = [
        (f"/sync/eventupload/{m.machine_id}", m.events_body(1, base_time=base, sha_pool=shas))
        for _ in range(per_machine)
        for m in wrk_machines
    ]
    return bodies


def wrk_stages(
    server, secret, machines, duration, work, stages, *, drain_here: bool = False
) -> list[WrkResult]:
    from events.models import Event

    bodies = wrk_bodies(machines, duration)
    results = []
    for stage in stages:
        before = Event.objects.count()
        result = run_wrk(server, secret, stage, bodies[stage], duration, work)
        if stage == "eventupload":
            wait_drained(drain_here=drain_here)
            stored = Event.objects.count() - before
            sent = min(result.requests, len(bodies[stage]))
            if stored < sent - result.errors - 16:  # in-flight requests at the end
                raise RuntimeError(f"event upload: {sent} sent, {stored} stored")
            result.cpu["stored"] = stored
        print(
            f"wrk {stage}: {result.rate:,.0f} req/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms, errors {result.errors}",
            file=sys.stderr,
        )
        results.append(result)
    return results


def section_wrk(server, secret, machines, duration, work, stages=STAGES) -> list[WrkResult]:
    return wrk_stages(server, secret, machines, duration, work, stages)


# What each switchable lever of the hot path gains: the server restarted with one of them off.
LEVERS = (
    ("as shipped", {}),
    ("prepared statements off", {"SYNC_PREPARED_STATEMENTS": "0"}),
    ("liveness written in the request", {"SYNC_WRITE_BEHIND_SECONDS": "0"}),
    ("events stored in the request", {"SYNC_DEFER_EVENTS": "0"}),
)
LEVER_STAGES = ("preflight", "eventupload", "postflight")


def section_levers(env, secret, machines, duration, work) -> list[tuple[str, list[WrkResult]]]:
    """The wrk runs of LEVER_STAGES once per LEVERS entry, each on a freshly started server."""
    rows = []
    for name, overrides in LEVERS:
        with Server({**env, **overrides}) as server:
            print(f"levers: {name}", file=sys.stderr)
            drain_here = overrides.get("SYNC_WRITE_BEHIND_SECONDS") == "0"
            results = wrk_stages(
                server, secret, machines, duration, work, LEVER_STAGES, drain_here=drain_here
            )
            rows.append((name, results))
    return rows


def sha_pool(n: int) -> list[str]:
    import hashlib

    return [hashlib.sha256(f"binary-{i}".encode()).hexdigest() for i in range(n)]


def _fleet_worker(url, secret, machines, seconds, share, seed, out):
    """One simulator process: 8 threads, each syncing its own machines in a loop."""
    rng = random.Random(seed)  # noqa: S311 - load shape
    shas = sha_pool(2_000)
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    latencies, events, failures = [], [0], []
    base = int(time.time()) - 3600

    def run(mine):
        client = Client(url, secret)
        for machine in itertools.cycle(mine):
            if time.monotonic() >= deadline:
                return
            n = rng.randint(1, 5) if rng.random() < share else 0
            body = machine.events_body(n, base_time=base, sha_pool=shas) if n else None
            start = time.monotonic()
            try:
                sync_type, received, _ = full_sync(client, machine, events=body)
                if (sync_type, received) != ("NORMAL", 0):
                    raise RuntimeError(f"not steady: {sync_type} {received}")
            except Exception as exc:
                with lock:
                    failures.append(repr(exc)[:300])
                continue
            with lock:
                latencies.append(time.monotonic() - start)
                events[0] += n

    chunks = [machines[i::8] for i in range(8)]
    threads = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks if chunk]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, events[0], failures))


def section_fleet(server, secret, machines, duration) -> dict:
    from hosts.models import HostSync

    before = HostSync.objects.count()
    queue = multiprocessing.Queue()
    halves = [machines[0::2], machines[1::2]]
    processes = [
        multiprocessing.Process(
            target=_fleet_worker,
            args=(server.url, secret, half, duration, EVENT_SHARE, i, queue),
        )
        for i, half in enumerate(halves)
    ]
    sample = CpuSample(server, "simulator")
    for p in processes:
        p.start()
    latencies, events, failures = [], 0, []
    for _ in processes:
        lat, ev, fail = queue.get()
        latencies += lat
        events += ev
        failures += fail
    for p in processes:
        p.join()
    cpu = sample.used()
    confirmed = HostSync.objects.count() - before
    if failures:
        print(f"fleet: {len(failures)} failed syncs, first: {failures[0]}", file=sys.stderr)
    latencies.sort()
    result = {
        "syncs": len(latencies),
        "seconds": cpu["wall"],
        "rate": len(latencies) / duration,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0,
        "failures": len(failures),
        "events": events,
        "confirmed": confirmed,
        "cpu": cpu,
        "machines": len(machines),
    }
    print(
        f"fleet: {result['rate']:,.0f} syncs/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, failures {len(failures)}",
        file=sys.stderr,
    )
    return result


def _memory_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def section_clean(server, secret, serial: int) -> dict:
    """The first clean sync of CLEAN_RULES rules to a new machine; worker peak memory."""
    from rules.models import Rule

    rules = Rule.objects.count()
    if rules < CLEAN_RULES:
        load_rules(CLEAN_RULES - rules, start=rules)
    workers = server.worker_pids()
    baseline = {}
    for pid in workers:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
        baseline[pid] = _memory_kib(pid, "VmRSS")
    machine = Machine(f"CLEAN-{serial:08d}-0000-0000-0000-000000000000", serial)
    client = Client(server.url, secret)
    start = time.perf_counter()
    sync_type, received, pages = full_sync(client, machine)
    seconds = time.perf_counter() - start
    growth = max(_memory_kib(pid, "VmHWM") - baseline[pid] for pid in workers)
    held = sum(v for k, v in machine.counts.items() if k != "compiler_rule_count")
    if held != CLEAN_RULES:
        raise RuntimeError(f"clean sync delivered {held} rules, expected {CLEAN_RULES}")
    result = {
        "seconds": seconds,
        "pages": pages,
        "received": received,
        "sync_type": sync_type,
        "growth_mib": growth / 1024,
        "rules": CLEAN_RULES,
    }
    print(
        f"clean: {received} rules in {pages} pages, {seconds:.2f} s, peak +{growth / 1024:.1f} MiB",
        file=sys.stderr,
    )
    return result


def wait_drained(timeout: float = 600, *, drain_here: bool = False) -> float:
    """Seconds until no accepted upload is waiting to be stored (SYNC_DEFER_EVENTS). With
    `drain_here` this process stores them, as the `events.drain` task would: a server without
    write-behind (SYNC_WRITE_BEHIND_SECONDS=0) has no background thread to do it."""
    from events.models import EventUpload
    from events.services import events_drain_all

    start = time.monotonic()
    while EventUpload.objects.filter(attempts=0).exists():
        if time.monotonic() - start > timeout:
            raise RuntimeError("accepted uploads were not stored within 10 minutes")
        if drain_here:
            events_drain_all()
        else:
            time.sleep(0.1)
    return time.monotonic() - start


def stored_flags(bodies: list[tuple[str, bytes]]) -> list[bool]:
    """For each upload body, whether its batch is stored (a batch is stored whole, so its
    first event tells), by the server's own dedupe key."""
    from events.models import Event
    from events.services import _dedupe_key

    keys = []
    for _path, body in bodies:
        document = json.loads(zlib.decompress(body))
        event = document["events"][0]
        keys.append(
            _dedupe_key(
                document["machine_id"],
                event["file_sha256"],
                event["execution_time"],
                event["decision"],
                event["pid"],
            )
        )
    stored = set()
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        stored |= set(
            Event.objects.filter(dedupe_key__in=chunk).values_list("dedupe_key", flat=True)
        )
    return [key in stored for key in keys]


def section_ingest(server, secret, machines, duration, work) -> dict:
    from events.models import Event, EventUpload

    shas = sha_pool(5_000)
    base = int(time.time()) - 7 * 86_400
    wrk_machines = machines[:WRK_MACHINES]
    per_machine = max(1, 400 * duration // len(wrk_machines))  # enough for 20,000 events/s
    bodies = [
        (f"/sync/eventupload/{m.machine_id}", m.events_body(BATCH, base_time=base, sha_pool=shas))
        for _ in range(per_machine)
        for m in wrk_machines
    ]
    before = Event.objects.count()
    started = time.monotonic()
    first = run_wrk(server, secret, "eventupload", bodies, duration, work)
    backlog = EventUpload.objects.count()
    drained_after = wait_drained()
    stored_in = time.monotonic() - started
    stored = Event.objects.count() - before
    flags = stored_flags(bodies)
    replay_bodies = [body for body, was_stored in zip(bodies, flags, strict=True) if was_stored]
    sent = len(replay_bodies)  # batches stored: every accepted batch, once
    middle = Event.objects.count()
    replay = run_wrk(server, secret, "eventupload", replay_bodies, min(duration, 10), work)
    wait_drained()
    added = Event.objects.count() - middle
    result = {
        "batches": sent,
        "requests": first.requests,
        "stored": stored,
        # Every batch answered 200 was committed, new or not (wrk starts over at the end of
        # its list: those repeats are deduplicated by the drain, and cost it as much).
        "events_per_s": first.rate * BATCH,
        "stored_per_s": stored / stored_in,
        "backlog": backlog,
        "drained_after": drained_after,
        "p50_ms": first.p50_ms,
        "p99_ms": first.p99_ms,
        "errors": first.errors,
        "replay_rate": replay.rate,
        "replay_events_per_s": replay.rate * BATCH,
        "replay_added": added,
        "replay_errors": replay.errors,
        "cpu": first.cpu,
    }
    print(
        f"ingest: {result['events_per_s']:,.0f} events/s accepted, "
        f"{result['stored_per_s']:,.0f} stored; replay "
        f"{result['replay_events_per_s']:,.0f} events/s, {added} added",
        file=sys.stderr,
    )
    return result


# --- report -------------------------------------------------------------------------------------


def machine_facts(env: dict) -> dict:
    from django.db import connection

    facts = {
        "cores": str(os.cpu_count()),
        "cpu": cpu_model(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "python": sys.version.split()[0],
    }
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            facts["database"] = "PostgreSQL " + cursor.fetchone()[0].split()[0]
    else:
        import sqlite3

        facts["database"] = "SQLite " + sqlite3.sqlite_version
    facts["server"] = server_description(env)
    return facts


def server_description(env: dict) -> str:
    workers = env.get("WEB_CONCURRENCY") or str(os.cpu_count())
    from syncapi.management.commands.serve import DEFAULT_THREADS

    threads = env.get("WEB_THREADS") or str(DEFAULT_THREADS)
    return f"granian (`manage.py serve`), {workers} workers of {threads} threads"


def render(facts, source, duration, fleet_size, wrk, fleet, clean, ingest, levers=None) -> str:
    lines = [
        "## The sync protocol under load",
        "",
        f"`python benchmarks/sync.py` on {facts['date']}: {facts['cores']} cores "
        f"({facts['cpu']}), "
        f"{facts['database']}, Python {facts['python']}, {facts['server']}, production "
        f"settings, {source}. Server, database and load "
        "generator share the same cores. "
        f"{STEADY_RULES:,} rules for everyone; every machine enrolled and synced first. "
        + SYNC_LIMITS_NOTE,
    ]
    if wrk:
        lines += [
            "",
            f"**Each stage under wrk** (2 threads, 16 connections, {duration} s, "
            f"{WRK_MACHINES} machines each POSTing its own deflate-compressed steady-state "
            "body with the enrollment secret; event upload: one new event per request). CPU: "
            "milliseconds of CPU per request used by the server's processes, PostgreSQL and wrk.",
            "",
            "| Stage | Requests/s | p50 | p99 | Errors | CPU ms/request: server / database / wrk |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in wrk:
            lines.append(
                f"| {r.stage} | {r.rate:,.0f} | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms | "
                f"{r.errors} | {r.cpu_ms('server'):.2f} / {r.cpu_ms('postgres'):.2f} / "
                f"{r.cpu_ms('wrk'):.2f} |"
            )
    if fleet:
        cpu = fleet["cpu"]
        lines += [
            "",
            f"**Full syncs** by the simulator in `benchmarks/sync.py` (2 processes of 8 threads, "
            f"{fleet['machines']:,} machines, events in {EVENT_SHARE:.0%} of syncs, 1 to 5 each; "
            "a sync is preflight, event upload when there are events, rule download, "
            f"postflight): **{fleet['rate']:,.0f} syncs/s** over {duration} s "
            f"({fleet['syncs']:,} syncs, {fleet['confirmed']:,} confirmed in the sync history, "
            f"{fleet['events']:,} events), p50 {fleet['p50_ms']:.1f} ms, p99 "
            f"{fleet['p99_ms']:.1f} ms per sync, {fleet['failures']} failed. CPU seconds: "
            f"server {cpu['server']:.1f}, database {cpu['postgres']:.1f}, simulator "
            f"{cpu['simulator']:.1f} of {2 * cpu['wall']:.0f} available.",
        ]
    if clean:
        lines += [
            "",
            f"**First clean sync of {clean['rules']:,} rules** to a new machine (preflight, "
            f"{clean['pages']} rule pages, postflight): **{clean['seconds']:.2f} s**, "
            f"{clean['received']:,} rules received; the serving worker's peak memory grew by "
            f"{clean['growth_mib']:.1f} MiB.",
        ]
    repeats = ""
    if ingest and ingest["requests"] > ingest["batches"]:
        repeats = f", {ingest['batches']:,} of them new, the rest repeats once wrk's list ran out"
    if ingest:
        lines += [
            "",
            f"**Event ingestion** under wrk (as above, batches of {BATCH} new events): "
            f"**{ingest['events_per_s']:,.0f} events/s accepted** ({ingest['requests']:,} "
            f"batches{repeats}; p50 {ingest['p50_ms']:.1f} ms, p99 {ingest['p99_ms']:.1f} ms "
            "per batch, "
            f"{ingest['errors']} errors) and **{ingest['stored_per_s']:,.0f} events/s stored** "
            f"({ingest['stored']:,} events in the database, with their catalogue and "
            f"statistics, {ingest['drained_after']:.1f} s after the load stopped; "
            f"{ingest['backlog']:,} uploads were waiting then). The same batches "
            f"replayed: {ingest['replay_events_per_s']:,.0f} events/s answered, "
            f"{ingest['replay_added']} stored (deduplicated), {ingest['replay_errors']} errors.",
        ]
    if levers:
        lines += [
            "",
            "**What the switchable levers gain**: the server restarted with one of them off, "
            f"the same wrk runs ({duration} s each). Requests/s, then CPU ms per request: "
            "server / database.",
            "",
            "| Server | " + " | ".join(LEVER_STAGES) + " |",
            "| --- |" + " ---: |" * len(LEVER_STAGES),
        ]
        for name, results in levers:
            cells = [
                f"{r.rate:,.0f} ({r.cpu_ms('server'):.2f} / {r.cpu_ms('postgres'):.2f})"
                for r in results
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_doc(path: Path, section: str) -> None:
    write_section(path, START, END, section)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--fleet", type=int, default=1_000, help="machines in the fleet run")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help="stages of the wrk section (iterating on one)"
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--source", help="what code is measured (default: git HEAD)")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if shutil.which("wrk") is None and only & {"wrk", "ingest"}:
        sys.exit("wrk is missing: apt-get install -y wrk")

    work = Path(tempfile.mkdtemp(prefix="santaadmin-syncbench-"))
    env = server_environment(work / "var")
    setup_django(env)
    from django.core.management import call_command
    from django.db import connection

    from hosts.services import enrollment_create

    if connection.vendor == "postgresql":
        prepare_database(bench_database_name())
    else:
        call_command("migrate", interactive=False, verbosity=0)
    facts = machine_facts(env)
    source = args.source or source_description()
    _, secret = enrollment_create(name="bench")
    load_rules(STEADY_RULES)
    connection.close()
    machines = [
        Machine(f"{n:08X}-BE0C-4000-8000-{n:012X}", n)
        for n in range(1, max(args.fleet, WRK_MACHINES) + 1)
    ]
    wrk = fleet = clean = ingest = levers = None
    try:
        with Server(env) as server:
            start = time.perf_counter()
            enroll(server, secret, machines)
            print(
                f"{len(machines):,} machines enrolled and synced in "
                f"{time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
            if "wrk" in only:
                stages = [s for s in STAGES if s in args.stages.split(",")]
                wrk = section_wrk(server, secret, machines, args.duration, work, stages)
            if "fleet" in only:
                fleet = section_fleet(server, secret, machines, args.duration)
            if "ingest" in only:
                ingest = section_ingest(server, secret, machines, args.duration, work)
            if "clean" in only:
                clean = section_clean(server, secret, len(machines) + 1)
        if "levers" in only and connection.vendor == "postgresql":
            levers = section_levers(env, secret, machines, args.duration, work)
    finally:
        if connection.vendor == "postgresql":
            from santaadmin.celery import app

            app.control.purge()
        shutil.rmtree(work, ignore_errors=True)
    section = render(facts, source, args.duration, args.fleet, wrk, fleet, clean, ingest, levers)
    print(section)
    if args.write:
        write_doc(args.doc, section)
        print(f"wrote {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
