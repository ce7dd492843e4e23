"""Stage 3, rule download: the host's rules, clean or incremental, a page at a time.

The cursor is opaque to the agent (§5.5.1) and signed by the server: it pins the revision the
download started at, the host's position and the counts delivered so far, so pages are stateless
and a retried page gets the same answer. The host's position is not advanced here — only the
postflight confirms it (an interrupted sync is simply repeated).
"""

from django.conf import settings
from django.core import signing

from hosts.models import SyncType
from hosts.services import host_record_ruledownload
from rules.delivery import DeliveredRule, add_counts, changes_page, clean_page

from .base import SyncRequest, sync_stage
from .codec import bad_request

_CURSOR_SALT = "santaadmin.syncapi.ruledownload"
# A clean sync that receives no rule at all deletes nothing on the agent (§5.5.3), so an empty
# clean set is sent as one REMOVE of a hash no binary has: the agent then wipes its rules.
EMPTY_SET_SENTINEL = DeliveredRule("BINARY", "0" * 64, "REMOVE")


def rule_message(rule: DeliveredRule) -> dict:
    message = {"identifier": rule.identifier, "policy": rule.policy, "rule_type": rule.rule_type}
    for name in ("custom_msg", "custom_url", "cel_expr"):
        value = getattr(rule, name)
        if value:
            message[name] = value
    return message


def _read_cursor(cursor: str, machine_id: str) -> dict:
    try:
        state = signing.loads(cursor, salt=_CURSOR_SALT, max_age=24 * 3600)
    except signing.BadSignature:
        raise bad_request("Invalid or expired cursor.", "invalid_cursor") from None
    if state.get("m") != machine_id:
        raise bad_request("The cursor belongs to another machine.", "invalid_cursor")
    return state


@sync_stage("RuleDownloadRequest", "RuleDownloadResponse")
def ruledownload(sync: SyncRequest) -> dict:
    cursor = sync.message.get("cursor")
    state = _read_cursor(cursor, sync.machine_id) if cursor else None  # before any write
    host = sync.host()
    if state is None:
        clean = host.rules_synced_rev is None or host.pending_sync_type in (
            SyncType.CLEAN,
            SyncType.CLEAN_ALL,
        )
        state = {
            "m": sync.machine_id,
            "r": sync.context.revision,
            "p": None if clean else host.rules_synced_rev,
            "a": None,
            "n": {} if clean else dict(host.expected_counts or {}),
            "u": None if clean else host.pending_rev,
            "k": 0,
        }
        if state["p"] == state["r"] and state["u"] is None:
            # Steady state: nothing changed since the host's last sync; no page to compute.
            return {}
    after = tuple(state["a"]) if state["a"] else None
    limit = settings.SYNC_RULES_PER_PAGE
    if state["p"] is None:
        page = clean_page(host.id, state["r"], after, limit)
    else:
        page = changes_page(host.id, state["p"], state["r"], after, limit, unconfirmed=state["u"])
    add_counts(state["n"], page.counts)
    state["k"] += len(page.rules)
    rules = page.rules
    if not page.done:
        state["a"] = list(page.last_key)
        return {
            "rules": [rule_message(rule) for rule in rules],
            "cursor": signing.dumps(state, salt=_CURSOR_SALT, compress=True),
        }
    if state["p"] is None and state["k"] == 0:
        rules = [EMPTY_SET_SENTINEL]
    host_record_ruledownload(
        host=host,
        revision=state["r"],
        clean=state["p"] is None,
        counts={kind: n for kind, n in state["n"].items() if n},
    )
    return {"rules": [rule_message(rule) for rule in rules]} if rules else {}
