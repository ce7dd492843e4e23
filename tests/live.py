"""A live production server and the network faults between it and its peers, for the outage
and soak tests (tests/test_outage.py, tests/test_soak.py).

* `LiveServer`: `manage.py serve` (granian, production settings) as its own process group,
  with its worker processes' resident memory read from /proc.
* `TcpProxy`: a byte-for-byte TCP proxy (the server's way to PostgreSQL) that can cut every
  connection and refuse new ones until restored, or cut when the client sends a given
  statement (a transaction cut part-way).
* `FaultyHttpProxy`: the agents' way to the server, one request per connection, that resets
  connections before the request is forwarded, part-way through its body, or after the server
  answered but before the answer reaches the agent, and delays others.
* `http_transport` / `retrying`: a SimulatedAgent transport over real HTTP that retries like
  Santa (up to five attempts; protocol.md §5.2), with the back-off scaled down.

Nothing here is imported by the application.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0, every=0.1):
    """Poll until predicate() is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")


def tail(path: Path, chars: int = 20000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"


def _reset(sock: socket.socket, *, graceful: bool = False) -> None:
    """Drop a connection: a TCP reset (SO_LINGER 0), or with `graceful` a FIN first. Another
    thread blocked in recv() on it keeps the socket open until woken, and shutdown() wakes it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if graceful:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def database_url(port: int | None = None) -> str:
    """DATABASE_URL naming the test database (pytest-django renamed it), optionally with the
    port replaced (a proxy on 127.0.0.1)."""
    from django.conf import settings

    parts = urlsplit(os.environ["DATABASE_URL"])
    name = settings.DATABASES["default"]["NAME"]
    parts = parts._replace(path=f"/{name}")
    if port is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        parts = parts._replace(
            netloc=f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        )
    return urlunsplit(parts)


def database_address() -> tuple[str, int]:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return parts.hostname or "127.0.0.1", parts.port or 5432


# --- the server ---------------------------------------------------------------------------------


class LiveServer:
    """`manage.py serve` on a free port with production settings (its own process group)."""

    def __init__(self, directory: Path, env: dict, *, workers: int = 2, threads: int = 2):
        self.directory, self.workers, self.threads = directory, workers, threads
        self.port = free_port()
        self.log = directory / "server.log"
        self.proc: subprocess.Popen | None = None
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL", "DATABASE_URL")
        }
        base.update(
            DJANGO_SETTINGS_MODULE="santaadmin.settings",
            SECRET_KEY=os.environ.get("SECRET_KEY") or "live-server-tests-only-0123456789abcdef",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SECURE_SSL_REDIRECT="0",
            # Fan-outs run in the request: no broker or worker is part of these tests (they
            # are in tests/test_worker.py), and nothing is left in a shared Redis.
            CELERY_TASK_ALWAYS_EAGER="1",
            SANTAADMIN_VAR_DIR=str(directory),
            PYTHONUNBUFFERED="1",
            # Every simulated Mac here connects from 127.0.0.1, faster than a fleet behind one
            # NAT would: the per-address limit is off (tests/test_sync_rate_limits.py tests
            # it); the per-machine limit stays at its default.
            SYNC_RATE_LIMIT_PER_ADDRESS="",
        )
        base.update(env)
        self.env = base

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "serve",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(self.workers),
                    "--threads",
                    str(self.threads),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def answers():
            assert self.proc.poll() is None, f"the server exited:\n{tail(self.log)}"
            try:
                status, _, _ = self.request("GET", "/healthz")
            except OSError:
                return False
            return status in (200, 503)

        wait_for(answers, "the server to answer /healthz", timeout, every=0.2)
        wait_for(lambda: len(self.worker_pids()) == self.workers, "granian's workers", timeout)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def worker_pids(self) -> list[int]:
        """The processes granian forked to serve requests (children of the main process)."""
        if not self.alive():
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid == self.proc.pid:
                pids.append(int(entry.name))
        return sorted(pids)

    @staticmethod
    def rss_kib(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for process {pid}")

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        """(status, headers, body) straight from the server (no proxy); the headers are an
        email.message.Message, so names are case-insensitive."""
        conn = http.client.HTTPConnection(*self.address, timeout=30)
        try:
            conn.request(method, path, body, {"Connection": "close", **(headers or {})})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()


# --- a TCP proxy that can be cut -----------------------------------------------------------------


class TcpProxy:
    """127.0.0.1:<port> → upstream, byte for byte. `cut()` resets every connection and refuses
    new ones (the listener is closed) until `restore()`; `cut_when(pattern)` cuts as soon as a
    client sends bytes holding `pattern`, before they are forwarded."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._listener: socket.socket | None = None
        self._trigger: bytes | None = None
        self.triggered = threading.Event()
        self.cut_count = 0
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: cut or stopped
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            pair = (client, server)
            with self._lock:
                if self._listener is not listener:
                    _reset(client)
                    _reset(server)
                    continue
                self._pairs.add(pair)
            threading.Thread(
                target=self._pump, args=(client, server, pair, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(server, client, pair, False), daemon=True
            ).start()

    def _pump(self, src, dst, pair, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                trigger = self._trigger
                if from_client and trigger is not None and trigger in data:
                    self._trigger = None
                    self.triggered.set()
                    self.cut()
                    return
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._pairs.discard(pair)
        for sock in pair:
            _reset(sock, graceful=True)

    def cut_when(self, pattern: bytes) -> None:
        self.triggered.clear()
        self._trigger = pattern

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, set()
            self.cut_count += 1
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(), so the port is free again.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                listener.close()
        for pair in pairs:
            for sock in pair:
                _reset(sock, graceful=True)

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def restore(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
        self._listen()

    def stop(self) -> None:
        self.cut()


# --- the agents' faulty network -----------------------------------------------------------------


FAULTS = ("reset_before_request", "reset_mid_body", "lost_response", "delay")


class FaultyHttpProxy:
    """Agents → proxy → server, one HTTP/1.1 request per connection. Each request meets at
    most one fault, drawn with the given probabilities (`faults` maps names of FAULTS to a
    probability); `enabled = False` turns them all off. `counts` says what happened."""

    def __init__(self, upstream: tuple[str, int], faults: dict[str, float], seed: int = 0):
        unknown = set(faults) - set(FAULTS)
        assert not unknown, unknown
        self.upstream, self.faults = upstream, faults
        self.enabled = True
        self.counts: Counter = Counter()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.port = free_port()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(512)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> FaultyHttpProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _draw(self) -> tuple[str, float]:
        with self._rng_lock:
            if not self.enabled:
                return "", 0.0
            roll, delay = self._rng.random(), self._rng.uniform(0.05, 0.5)
        for name in FAULTS:
            probability = self.faults.get(name, 0.0)
            if roll < probability:
                return name, delay
            roll -= probability
        return "", 0.0

    def _serve(self, client: socket.socket) -> None:
        server = None
        try:
            client.settimeout(30)
            head, body, length = _read_message(client)
            fault, delay = self._draw()
            self.counts["requests"] += 1
            if fault:
                self.counts[fault] += 1
            if fault == "reset_before_request":
                _reset(client)
                return
            if fault == "delay":
                time.sleep(delay)
            server = socket.create_connection(self.upstream, timeout=30)
            if fault == "reset_mid_body":
                # The server gets the head and part of the body, then the connection dies.
                server.sendall(head + body[: max(0, min(len(body), length) // 2)])
                time.sleep(0.01)
                _reset(server)
                _reset(client)
                return
            server.sendall(head + body)
            response_head, response_body, _ = _read_message(server, response=True)
            if fault == "lost_response":
                # The server processed the request; the agent never hears of it.
                _reset(client)
                return
            client.sendall(response_head + response_body)
        except (OSError, ValueError):
            self.counts["proxy_errors"] += 1
            _reset(client)
        finally:
            if server is not None:
                with contextlib.suppress(OSError):
                    server.close()
            with contextlib.suppress(OSError):
                client.close()


def _read_message(sock: socket.socket, response: bool = False) -> tuple[bytes, bytes, int]:
    """One HTTP message: (head, body, declared length). A request has a Content-Length body;
    a response without one (chunked) is read to the end of the connection, which the server
    closes after it (the agents send `Connection: close`)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("connection closed before the end of the headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    head += b"\r\n\r\n"
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None and response:
        while chunk := sock.recv(65536):
            body += chunk
        return head, body, len(body)
    length = length or 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("connection closed before the end of the body")
        body += chunk
    return head, body, length


# --- the agents' transport ----------------------------------------------------------------------


def http_transport(address: tuple[str, int], timeout: float = 30.0):
    """A SimulatedAgent transport over real HTTP, one connection per request."""

    def send(path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(*address, timeout=timeout)
        try:
            conn.request("POST", path, body, {**headers, "Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    return send


def retrying(transport, attempts: int = 5, backoff: float = 0.05, on_attempt=None):
    """Santa's per-request retries (protocol.md §5.2): up to `attempts` tries; stop on 200 and
    on a 4xx other than 408/429; retry 5xx, 408, 429 and transport errors. The real back-off
    is 2^n seconds (4, 8, 16, 32); here `backoff` * 2^n. A transport error after the last
    attempt is status 0."""

    def send(path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        status, data = 0, b""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(backoff * 2**attempt)
            try:
                status, data = transport(path, body, headers)
            except (OSError, http.client.HTTPException):
                status, data = 0, b""
            if on_attempt is not None:
                on_attempt(path, status)
            if status == 200 or (400 <= status < 500 and status not in (408, 429)):
                break
        return status, data

    return send
