"""Walking the URLconf, and a small world whose ids fill every console URL.

Shared by the permission walks (tests/test_console_permissions.py, tests/test_url_coverage.py),
the header and CSP tests (tests/test_security_headers.py) and the browser walk
(tests/browser/test_csp_browser.py), so a page added later is visited by all of them.
"""

from __future__ import annotations

from unittest import mock

from django.urls import URLPattern, URLResolver, get_resolver

# Console URLs that are deliberately not behind a role.
PUBLIC_CONSOLE = {
    "login",  # the sign-in page
    "logout",  # signing out needs no role
    "events:request_public",  # Santa's block dialog opens it for any user of a Mac
    "healthz",
}
NOT_CONSOLE = ("admin/", "api/", "sync/", "static/")


def walk(patterns=None, prefix: str = "", namespace: str = ""):
    """(route, name, callback) of every URL pattern, nested includes resolved."""
    if patterns is None:
        patterns = get_resolver().url_patterns
    for entry in patterns:
        if isinstance(entry, URLResolver):
            ns = entry.namespace or namespace
            yield from walk(entry.url_patterns, prefix + str(entry.pattern), ns)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
            yield prefix + str(entry.pattern), name, entry.callback


def route(pattern: str, args: dict) -> str:
    """The path of a console route with its <converter:name> parts filled from `args`."""
    path = pattern
    for key, value in args.items():
        for converter in ("int", "str", "slug"):
            path = path.replace(f"<{converter}:{key}>", str(value))
    return "/" + path.lstrip("^").rstrip("$")


def console_patterns():
    """(route, name, callback) of every console page (not admin, API, sync or static)."""
    return [entry for entry in walk() if not entry[0].startswith(NOT_CONSOLE)]


def build_world(make_agent, actor) -> dict:
    """One of everything a console URL addresses: a synced host with a blocked, signed binary
    in a bundle, an approval request for it, a rule, a report that is done, an API token of
    `actor`. Returns the ids for route()."""
    from accounts.services import api_token_create
    from events.approvals import approval_request_submit
    from events.models import Binary
    from hosts.models import Host
    from reports.jobs import report_execute
    from reports.services import report_create
    from rules.services import RuleInput, rule_create

    sha = "c7" * 32
    agent = make_agent(hostname="walk-mbp.example.com", primary_user="walker")
    agent.sync()
    agent.upload_events(
        [
            {
                "file_sha256": sha,
                "file_name": "Walker",
                "file_path": "/Applications/Walker.app/Contents/MacOS",
                "decision": "BLOCK_UNKNOWN",
                "execution_time": 1_767_225_600 + n,
                "executing_user": "walker",
                "pid": 100 + n,
                "team_id": "WALK123456",
                "signing_id": "WALK123456:com.example.walker",
                "file_bundle_id": "com.example.walker",
                "file_bundle_name": "Walker",
                "file_bundle_path": "/Applications/Walker.app",
                "file_bundle_version_string": "1.0",
                "signing_chain": [{"sha256": "d8" * 32, "cn": "Developer ID Application: W"}],
            }
            for n in range(3)
        ]
    )
    host = Host.objects.get(machine_id=agent.machine_id)
    approval = approval_request_submit(
        binary=Binary.objects.get(pk=sha), host=host, requester="walker", reason="For work."
    )
    rule = rule_create(
        data=RuleInput(rule_type="BINARY", identifier="e9" * 32, policy="BLOCKLIST"),
        actor=actor,
        justification="A walk needs a rule.",
    )
    with mock.patch("reports.services.report_send"):  # run here, not in a thread
        report = report_create(kind="hosts", file_format="csv", parameters={}, actor=actor)
    report_execute(report.pk)
    token, _ = api_token_create(user=actor, name="walk", scopes=["read"])
    return {
        "pk": None,  # per URL name below
        "sha256": sha,
        "kind": "rules",
        "host": host.pk,
        "rule": rule.pk,
        "approval": approval.pk,
        "report": report.pk,
        "token": token.pk,
        "machine_id": agent.machine_id,
    }


# Which object a console URL's <pk> means, by URL namespace.
PK_OF = {
    "events": "approval",
    "rules": "rule",
    "hosts": "host",
    "reports": "report",
    "accounts": "token",
}


def console_path(pattern: str, name: str, world: dict) -> str:
    namespace = name.split(":", 1)[0] if ":" in name else ""
    args = {"sha256": world["sha256"], "kind": world["kind"]}
    if namespace in PK_OF:
        args["pk"] = world[PK_OF[namespace]]
    return route(pattern, args)
