"""The dashboard: fleet counts by mode, sync health and version, the blocked-executions chart
and the most blocked binaries, all built from real agent syncs and uploads."""

import datetime
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from events.approvals import approval_request_submit
from events.models import Binary
from hosts.models import Host
from hosts.services import host_set_mode_override, hosts_mark_stale
from santaadmin.charts import Series, axis_scale, last_days, nice_step, stacked_bars
from tests.agent import held

HOSTILE = "<script>alert(1)</script>"
ESCAPED = b"&lt;script&gt;alert(1)&lt;/script&gt;"


def _host(agent) -> Host:
    return Host.objects.get(machine_id=agent.machine_id)


def _at(day: datetime.date, hour: int = 12) -> float:
    return datetime.datetime(day.year, day.month, day.day, hour, tzinfo=datetime.UTC).timestamp()


def _event(sha: str, when: float, decision: str = "BLOCK_BINARY", name: str = "tool", **extra):
    return {
        "file_sha256": sha,
        "file_name": name,
        "file_path": "/usr/local/bin",
        "decision": decision,
        "execution_time": when,
        "executing_user": "alice",
        **extra,
    }


def _today() -> datetime.date:
    return timezone.now().astimezone(datetime.UTC).date()


@pytest.fixture
def fleet(make_agent):
    """Five agents in known states (see each line)."""
    synced = make_agent(machine_id="SYNCED")
    synced.sync()  # MONITOR, 2026.8.1, synced

    overridden = make_agent(machine_id="OVERRIDDEN", santa_version="2025.1")
    overridden.sync()  # reports MONITOR, but the operator locks it down
    host_set_mode_override(host=_host(overridden), client_mode="LOCKDOWN")

    never = make_agent(machine_id="NEVER")
    never.client_mode = "LOCKDOWN"
    never.preflight()  # no postflight ever: never synced

    drifted = make_agent(machine_id="DRIFTED", santa_version="2025.1")
    drifted.sync()
    drifted.sync()
    drifted.rules[("BINARY", "e" * 64)] = held("ALLOWLIST")  # added behind the server's back
    drifted.sync()

    stale = make_agent(machine_id="STALE")
    stale.client_mode = "STANDALONE"
    stale.sync()
    Host.objects.filter(machine_id="STALE").update(
        stale_after=timezone.now() - datetime.timedelta(minutes=1)
    )
    assert hosts_mark_stale() == 1
    return {
        "synced": synced,
        "overridden": overridden,
        "never": never,
        "drifted": drifted,
        "stale": stale,
    }


def test_fleet_counts_by_mode_health_and_version(fleet, analyst_console):
    assert _host(fleet["drifted"]).drift_detected_at is not None
    response = analyst_console.get("/")
    assert response.status_code == 200
    assert response.context["modes"] == [("Lockdown", 2), ("Monitor", 2), ("Standalone", 1)]
    assert response.context["health"] == {
        "total": 5,
        "synced": 3,  # SYNCED, OVERRIDDEN, DRIFTED (STALE is stale, NEVER never finished)
        "stale": 1,
        "never": 1,
        "drifted": 1,
    }
    assert [(v["santa_version"], v["n"]) for v in response.context["versions"]] == [
        ("2026.8.1", 3),
        ("2025.1", 2),
    ]
    html = response.content.decode()
    for name, value in (("total", 5), ("synced", 3), ("stale", 1), ("never", 1), ("drifted", 1)):
        assert f'id="hosts-{name}">{value}<' in html
    assert '<th scope="row">Lockdown</th><td class="num">2</td>' in html
    assert '<th scope="row">Standalone</th><td class="num">1</td>' in html
    assert '<th scope="row">2025.1</th><td class="num">2</td>' in html


def test_hosts_without_a_reported_mode(make_agent, analyst_console):
    for n in range(3):
        make_agent(machine_id=f"M{n}").preflight()
    Host.objects.filter(machine_id__in=["M0", "M1"]).update(reported_client_mode="")
    host_set_mode_override(host=Host.objects.get(machine_id="M1"), client_mode="STANDALONE")
    modes = analyst_console.get("/").context["modes"]
    assert modes == [("Lockdown", 0), ("Monitor", 1), ("Standalone", 1), ("Not reported", 1)]


def test_versions_are_the_top_ten(make_agent, analyst_console):
    for n in range(12):
        for _ in range(1 if n else 3):
            make_agent(santa_version=f"2026.{n}").preflight()
    versions = analyst_console.get("/").context["versions"]
    assert len(versions) == 10
    assert (versions[0]["santa_version"], versions[0]["n"]) == ("2026.0", 3)
    # Ties broken by the version string: 2026.1, 2026.10, 2026.11, 2026.2, ...
    assert [v["santa_version"] for v in versions[1:4]] == ["2026.1", "2026.10", "2026.11"]


@pytest.fixture
def blocked_history(make_agent):
    """Known days: yesterday 2 blocked + 1 would-block, ten days ago 3 blocked, and one
    blocked execution 40 days ago (outside the chart)."""
    agents = [make_agent() for _ in range(3)]
    for agent in agents:
        agent.sync()
    today = _today()
    yesterday, ten_ago, old = (today - datetime.timedelta(days=d) for d in (1, 10, 40))
    wide, busy, monitor = "a" * 64, "b" * 64, "c" * 64
    for n, agent in enumerate(agents):  # `wide` blocked on 3 hosts, once each, ten days ago
        agent.upload_events([_event(wide, _at(ten_ago) + n, name="wide-tool")])
    agents[0].upload_events(  # `busy` blocked 2x yesterday and once long ago, on one host
        [
            _event(busy, _at(yesterday), name="busy-tool"),
            _event(busy, _at(yesterday) + 60, name="busy-tool"),
            _event(busy, _at(old), name="busy-tool"),
        ]
    )
    for agent in agents[:2]:  # `monitor` would be blocked on 2 hosts; one of them yesterday
        agent.upload_events(
            [
                _event(
                    monitor,
                    _at(yesterday if agent is agents[0] else old),
                    decision="ALLOW_UNKNOWN",
                    name="monitor-tool",
                )
            ]
        )
    agents[2].upload_events([_event("d" * 64, _at(yesterday), decision="ALLOW_BINARY")])
    return {"today": today, "yesterday": yesterday, "ten_ago": ten_ago}


def test_chart_bars_for_known_days(blocked_history, analyst_console):
    response = analyst_console.get("/")
    chart = response.context["chart"]
    days = blocked_history
    assert len(chart.bars) == 30
    assert (chart.first_day, chart.last_day) == (
        days["today"] - datetime.timedelta(29),
        days["today"],
    )
    by_day = {bar.day: {s.key: v for s, v in bar.values} for bar in chart.bars}
    assert by_day[days["yesterday"]] == {"blocked": 2, "would_block": 1}
    assert by_day[days["ten_ago"]] == {"blocked": 3, "would_block": 0}
    assert sum(bar.total for bar in chart.bars) == 6  # 40 days ago and the allowed one: out
    assert {s.key: total for s, total in chart.totals} == {"blocked": 5, "would_block": 1}
    assert chart.y_max == 3  # largest day 3: steps of 1

    html = response.content.decode()
    yesterday = days["yesterday"].isoformat()
    assert f'<g class="bar" data-day="{yesterday}" data-total="3">' in html
    assert f"<title>{yesterday}: 2 blocked, 1 would be blocked</title>" in html
    bar = next(b for b in chart.bars if b.day == days["yesterday"])
    blocked, would = bar.segments
    assert (blocked.value, would.value) == (2, 1)
    assert blocked.height == pytest.approx(2 * would.height, abs=0.02)  # stacked to scale
    assert blocked.y + blocked.height == pytest.approx(chart.bottom)
    assert would.y + would.height == pytest.approx(blocked.y)
    assert f'<rect x="{blocked.x}" y="{blocked.y}" width="{blocked.width}"' in html
    # The accessible name and description, the fallback table, no style attribute or script.
    assert 'role="img" aria-labelledby="chart-title chart-desc"' in html
    assert "Blocked: 5 in all. Would be blocked: 1 in all." in html
    assert f'<th scope="row">{yesterday}</th><td class="num">2</td><td class="num">1</td>' in html
    assert "style=" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)


def test_top_blocked_binaries_by_impact(blocked_history, analyst_console):
    response = analyst_console.get("/")
    top = response.context["top_binaries"]
    # Hosts first (wide 3, monitor 2, busy 1); the allowed-only binary is not listed.
    assert [b.sha256 for b in top] == ["a" * 64, "c" * 64, "b" * 64]
    html = response.content.decode()
    positions = [html.index(f'href="/binaries/{sha}/"') for sha in ("a" * 64, "c" * 64, "b" * 64)]
    assert positions == sorted(positions)
    assert 'href="/binaries/' + "d" * 64 not in html


def test_top_binaries_are_ten(make_agent, analyst_console):
    agent = make_agent()
    agent.sync()
    agent.upload_events([_event(f"{n:064x}", _at(_today()) + n) for n in range(12)])
    assert len(analyst_console.get("/").context["top_binaries"]) == 10


def test_waiting_requests_count_and_newest_five(make_agent, analyst_console):
    agent = make_agent()
    agent.sync()
    agent.upload_events([_event("f" * 64, _at(_today()), name="wanted")])
    binary, host = Binary.objects.get(), _host(agent)
    made = [
        approval_request_submit(binary=binary, host=host, requester=f"user{n}", reason="work")
        for n in range(6)
    ]
    response = analyst_console.get("/")
    assert response.context["waiting_count"] == 6
    assert [r.pk for r in response.context["waiting"]] == [r.pk for r in reversed(made[1:])]
    html = response.content.decode()
    assert 'id="waiting-count">6<' in html
    assert f'href="/requests/{made[5].pk}/"' in html
    assert f'href="/requests/{made[0].pk}/"' not in html


def test_queries_do_not_grow_with_the_fleet_and_never_touch_events(make_agent, analyst_console):
    def measure():
        with CaptureQueriesContext(connection) as queries:
            assert analyst_console.get("/").status_code == 200
        return [q["sql"] for q in queries.captured_queries]

    first = make_agent()
    first.sync()
    first.upload_events([_event("1" * 64, _at(_today()))])
    small = measure()
    for n in range(6):
        agent = make_agent(santa_version=f"2026.{n}")
        agent.sync()
        agent.upload_events([_event(f"{n + 2:064x}", _at(_today()) - n * 86400)])
    large = measure()
    assert len(large) == len(small)
    assert len(small) <= 12
    assert not [sql for sql in large if '"events_event"' in sql]


def test_roles(make_agent, console, client):
    make_agent().sync()
    assert console("analyst").get("/").status_code == 200
    assert console("auditor").get("/").status_code == 200
    assert console("admin").get("/").status_code == 200
    assert console(None).get("/").status_code == 403
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert client.post("/").status_code == 405


def test_hostile_names_are_escaped(make_agent, analyst_console):
    agent = make_agent(santa_version=HOSTILE)
    agent.sync()
    agent.upload_events([_event("9" * 64, _at(_today()), name=HOSTILE)])
    approval_request_submit(
        binary=Binary.objects.get(), host=_host(agent), requester=HOSTILE, reason=HOSTILE
    )
    Host.objects.update(hostname=HOSTILE)
    content = analyst_console.get("/").content
    assert HOSTILE.encode() not in content
    assert content.count(ESCAPED) >= 4  # version, binary, requester, host name


# --- the chart's geometry -----------------------------------------------------------------------


def test_nice_steps_and_axis():
    assert [nice_step(v) for v in (0, 1, 1.5, 3, 7, 12, 40, 260)] == [1, 1, 2, 5, 10, 20, 50, 500]
    assert axis_scale(0) == (1, 1)
    assert axis_scale(3) == (3, 1)
    assert axis_scale(9) == (10, 5)
    assert axis_scale(1234) == (1500, 500)


def test_stacked_bars_geometry():
    days = last_days(datetime.date(2026, 3, 2), 3)
    assert days == [
        datetime.date(2026, 2, 28),
        datetime.date(2026, 3, 1),
        datetime.date(2026, 3, 2),
    ]
    series = [Series("blocked", "Blocked", "#b42318"), Series("would_block", "Would", "#d08700")]
    values = {(days[0], "blocked"): 4, (days[2], "blocked"): 1, (days[2], "would_block"): 3}
    chart = stacked_bars(
        days,
        series,
        values,
        width=340,
        height=140,
        margin_left=40,
        margin_right=0,
        margin_top=0,
        margin_bottom=40,
        label_every=2,
    )
    assert chart.y_max == 4 and [t.value for t in chart.y_ticks] == [0, 1, 2, 3, 4]
    assert [t.y for t in chart.y_ticks] == [100.0, 75.0, 50.0, 25.0, 0.0]
    first, empty, last = chart.bars
    assert (first.x, first.width) == (54.0, 72.0)  # slots of 100, bars 72 wide, centred
    assert [(s.y, s.height) for s in first.segments] == [(0.0, 100.0)]
    assert empty.segments == () and empty.title == "2026-03-01: 0 blocked, 0 would"
    assert [(s.series.key, s.y, s.height) for s in last.segments] == [
        ("blocked", 75.0, 25.0),
        ("would_block", 0.0, 75.0),
    ]
    assert [(label.text, label.x) for label in chart.x_labels] == [
        ("02-28", 90.0),
        ("03-02", 290.0),
    ]
    assert chart.busiest is last  # 4 each: the latest day wins the tie
    assert chart.total == 8
