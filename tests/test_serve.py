"""`manage.py serve`: the production web server (granian) the README starts."""

import os
import signal
import subprocess
import sys
import time
import zlib
from http.client import HTTPConnection
from pathlib import Path

import pytest
from django.core.management import CommandError

from syncapi.management.commands.serve import server_command
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_line():
    command = server_command(bind="0.0.0.0:9000", workers=3, threads=4, extra=["--backlog", "64"])
    assert Path(command[0]).name == "granian"
    joined = " ".join(command[1:])
    assert "--interface wsgi --host 0.0.0.0 --port 9000 --workers 3 --blocking-threads 4" in joined
    assert command[-3:] == ["--backlog", "64", "santaadmin.wsgi:application"]


@pytest.mark.parametrize("bind", ["8000", "host:", ":80x"])
def test_a_bad_bind_is_refused(bind):
    with pytest.raises(CommandError):
        server_command(bind=bind, workers=1, threads=1)


def test_it_serves_the_console_and_the_agents(tmp_path):
    """A real server process on embedded settings: health, a refused sync, a real preflight."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["SANTAADMIN_VAR_DIR"] = str(tmp_path)
    env["WEB_CONCURRENCY"], env["WEB_THREADS"] = "1", "2"
    port = free_port()
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    created = subprocess.run(
        [python, "manage.py", "enrollment", "create", "serve-test"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    secret = next(word for word in created.split() if word.startswith("sa_"))
    server = subprocess.Popen(
        [python, "manage.py", "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                health = conn.getresponse()
                health.read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health.status == 200
        machine = "0A1B2C3D-0000-4000-8000-000000000001"
        body = zlib.compress(b'{"machine_id": "%s", "serial_num": "C02X"}' % machine.encode())
        headers = {"Content-Type": "application/json", "Content-Encoding": "deflate"}
        conn.request("POST", f"/sync/preflight/{machine}", body, headers)
        refused = conn.getresponse()
        refused.read()
        assert refused.status == 401
        conn.request(
            "POST",
            f"/sync/preflight/{machine}",
            body,
            {**headers, "Authorization": f"Bearer {secret}"},
        )
        answer = conn.getresponse()
        assert answer.status == 200
        assert b'"sync_type":"CLEAN"' in answer.read()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
