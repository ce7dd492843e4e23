"""Approval requests: a blocked user asks, an analyst approves (into a rule) or denies.

Every function is keyword-only and runs in one transaction that also writes its audit entry.
Requests come from the public request page (no account: the requester is the user name in the
link Santa's block dialog opens), so everything they carry is validated here.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record
from hosts.models import Host
from rules.models import Policy, Rule
from rules.services import rule_approve

from .models import ApprovalRequest, ApprovalState, Binary, BinaryHost

MAX_REASON = 2000
MAX_REQUESTER = 255
MAX_RESPONSE = 2000
# Anyone who knows a machine id and a binary it ran can ask, under any user name: cap the
# requests waiting per binary and host, so the page cannot be used to flood the queue.
MAX_PENDING_PER_BINARY_HOST = 10
ALLOW_POLICIES = {Policy.ALLOWLIST, Policy.ALLOWLIST_COMPILER}

# Control characters; text fields may keep tab, newline and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ApprovalError(Exception):
    """A request or decision that cannot be made; `field` names the input at fault."""

    status = 400
    code = "invalid_request"

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotPending(ApprovalError):
    status = 409
    code = "request_decided"


def _text(value, *, field: str, label: str, limit: int, required: bool, multiline: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ApprovalError(f"{label} must be text.", field)
    value = value.strip()
    if required and not value:
        raise ApprovalError(f"{label} is required.", field)
    if len(value) > limit:
        raise ApprovalError(f"{label} is longer than {limit} characters.", field)
    if (_CONTROL if multiline else _CONTROL_OR_NEWLINE).search(value):
        raise ApprovalError(f"{label} contains control characters.", field)
    return value


def clean_requester(requester) -> str:
    return _text(
        requester,
        field="requester",
        label="The user name",
        limit=MAX_REQUESTER,
        required=True,
        multiline=False,
    )


def clean_reason(reason) -> str:
    return _text(
        reason, field="reason", label="A reason", limit=MAX_REASON, required=True, multiline=True
    )


def clean_response(response, *, required: bool) -> str:
    return _text(
        response,
        field="response",
        label="A message to the requester",
        limit=MAX_RESPONSE,
        required=required,
        multiline=True,
    )


def _snapshot(request: ApprovalRequest) -> dict:
    return {
        "binary": request.binary_id,
        "machine_id": request.host.machine_id,
        "requester": request.requester,
        "reason": request.reason,
        "state": request.state,
        "response": request.response,
        "rule": request.rule_id,
    }


def _repr(request: ApprovalRequest) -> str:
    return f"{request.requester}@{request.host.machine_id} for {request.binary_id}"


def approval_request_submit(
    *, binary: Binary, host: Host, requester: str, reason: str
) -> ApprovalRequest:
    """Ask for `binary` on `host`. One pending request per (binary, host, requester): asking
    again while one waits replaces its reason."""
    requester = clean_requester(requester)
    reason = clean_reason(reason)
    if not BinaryHost.objects.filter(binary=binary, host=host).exists():
        raise ApprovalError("This Mac has not run this program.", "binary")
    actor_name = f"requester:{requester}@{host.machine_id}"
    with transaction.atomic():
        pending = ApprovalRequest.objects.filter(
            binary=binary, host=host, state=ApprovalState.PENDING
        )
        mine = pending.select_for_update().filter(requester=requester)
        existing = mine.first()
        if existing is None:
            if pending.count() >= MAX_PENDING_PER_BINARY_HOST:
                raise ApprovalError(
                    "Too many requests for this program on this Mac are already waiting; "
                    "an analyst will look at them.",
                    "reason",
                )
            try:
                with transaction.atomic():
                    created = ApprovalRequest.objects.create(
                        binary=binary, host=host, requester=requester, reason=reason
                    )
            except IntegrityError:
                # The same requester asked at the same moment (the one-pending constraint).
                existing = mine.first()
                if existing is None:
                    raise
            else:
                audit_record(
                    action="approval_request.create",
                    object_type="approval_request",
                    object_id=created.pk,
                    object_repr=_repr(created),
                    after=_snapshot(created),
                    actor_name=actor_name,
                )
                return created
        before = _snapshot(existing)
        existing.reason = reason
        existing.save(update_fields=["reason", "updated_at"])
        audit_record(
            action="approval_request.update",
            object_type="approval_request",
            object_id=existing.pk,
            object_repr=_repr(existing),
            before=before,
            after=_snapshot(existing),
            actor_name=actor_name,
        )
        return existing


def _lock_pending(request: ApprovalRequest) -> ApprovalRequest:
    locked = (
        ApprovalRequest.objects.select_for_update()
        .select_related("binary", "host")
        .filter(pk=request.pk)
        .first()
    )
    if locked is None:
        raise ApprovalError("This request no longer exists.")
    if locked.state != ApprovalState.PENDING:
        raise NotPending(
            f"This request was already decided ({locked.get_state_display().lower()}); "
            "only waiting requests can be approved or denied."
        )
    return locked


def _refresh(target: ApprovalRequest, source: ApprovalRequest) -> None:
    for name in ("state", "decided_by_id", "decided_at", "response", "rule_id", "updated_at"):
        setattr(target, name, getattr(source, name))


def approval_request_approve(
    *,
    request: ApprovalRequest,
    actor,
    rule_type: str,
    policy: str = Policy.ALLOWLIST,
    tags: Sequence[str] = (),
    machine_ids: Sequence[str] = (),
    expires_at: datetime.datetime | None = None,
    custom_msg: str = "",
    justification: str,
    response: str = "",
) -> Rule:
    """Decide a waiting request with a rule for its binary (rules.services.rule_approve).

    An allow policy approves the request; a block policy (the analyst chose Block) closes it as
    denied, with the rule attached. A rule of the same type and scope that already exists is
    a RuleConflict (rules.errors), raised before anything is written.
    """
    response = clean_response(response, required=False)
    with transaction.atomic():
        locked = _lock_pending(request)
        before = _snapshot(locked)
        rule = rule_approve(
            binary=locked.binary,
            rule_type=rule_type,
            policy=policy,
            tags=tags,
            machine_ids=machine_ids,
            expires_at=expires_at,
            custom_msg=custom_msg,
            justification=justification,
            actor=actor,
        )
        approved = policy in ALLOW_POLICIES
        locked.state = ApprovalState.APPROVED if approved else ApprovalState.DENIED
        locked.decided_by = actor if actor is not None and actor.is_authenticated else None
        locked.decided_at = timezone.now()
        locked.response = response
        locked.rule = rule
        locked.save(
            update_fields=["state", "decided_by", "decided_at", "response", "rule", "updated_at"]
        )
        audit_record(
            action="approval_request.approve" if approved else "approval_request.deny",
            object_type="approval_request",
            object_id=locked.pk,
            object_repr=_repr(locked),
            before=before,
            after=_snapshot(locked) | {"policy": policy, "rule_type": rule_type},
            justification=justification.strip(),
            actor=actor,
        )
    _refresh(request, locked)
    return rule


def approval_request_deny(*, request: ApprovalRequest, actor, response: str) -> ApprovalRequest:
    """Refuse a waiting request; `response` (required) is what the requester reads."""
    response = clean_response(response, required=True)
    with transaction.atomic():
        locked = _lock_pending(request)
        before = _snapshot(locked)
        locked.state = ApprovalState.DENIED
        locked.decided_by = actor if actor is not None and actor.is_authenticated else None
        locked.decided_at = timezone.now()
        locked.response = response
        locked.save(update_fields=["state", "decided_by", "decided_at", "response", "updated_at"])
        audit_record(
            action="approval_request.deny",
            object_type="approval_request",
            object_id=locked.pk,
            object_repr=_repr(locked),
            before=before,
            after=_snapshot(locked),
            justification=response,
            actor=actor,
        )
    _refresh(request, locked)
    return request
