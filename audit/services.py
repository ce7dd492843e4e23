"""Recording audit entries. Call `audit_record` inside the transaction of the change."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from django.db import transaction
from django.utils import timezone

from .context import current_request
from .models import AuditEntry

SYSTEM = "system"


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _actor_of(request):
    user = getattr(request, "user", None) if request is not None else None
    if user is not None and user.is_authenticated:
        return user
    return None


def _token_of(request, actor) -> str:
    """The prefix of the API token the request was authenticated with (set on the Django
    request by accounts.authentication), when the entry's actor is that token's user."""
    token = getattr(request, "api_token", None) if request is not None else None
    if token is None or actor is None or token.user_id != actor.pk:
        return ""
    return token.prefix


def audit_record_many(
    *,
    action: str,
    object_type: str,
    objects,
    justification: str = "",
    actor=None,
    actor_name: str | None = None,
    request=None,
) -> list[AuditEntry]:
    """One entry per object of a change (`objects`: (id, repr, before, after) tuples), in a
    single INSERT, inside the transaction of the change. The actor defaults to the signed-in
    user of the current request (or of `request`, when given), else "system"; when that
    request came with an API token of the actor, the entries name its prefix. The model
    chains the entries (audit.chain) under a lock on the chain's head."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit entries are written inside the transaction of the change")
    request = request if request is not None else current_request()
    if actor is not None and not actor.is_authenticated:
        actor = None
    actor = actor or _actor_of(request)
    name = actor_name or (actor.get_username() if actor is not None else SYSTEM)
    address = (request.META.get("REMOTE_ADDR") or None) if request is not None else None
    token = _token_of(request, actor)
    now = timezone.now()
    return AuditEntry.objects.bulk_create(
        [
            AuditEntry(
                at=now,
                actor=actor,
                actor_name=name[:150],
                actor_token=token,
                action=action,
                object_type=object_type,
                object_id=str(object_id)[:128],
                object_repr=str(text)[:1000],
                before=_jsonable(before),
                after=_jsonable(after),
                justification=justification,
                source_ip=address,
            )
            for object_id, text, before, after in objects
        ],
        batch_size=2000,
    )


def audit_record(
    *,
    action: str,
    object_type: str,
    object_id="",
    object_repr: str = "",
    before=None,
    after=None,
    justification: str = "",
    actor=None,
    actor_name: str | None = None,
    request=None,
) -> AuditEntry:
    """Append an entry. The actor defaults to the signed-in user of the current request."""
    [entry] = audit_record_many(
        action=action,
        object_type=object_type,
        objects=[(object_id, object_repr, before, after)],
        justification=justification,
        actor=actor,
        actor_name=actor_name,
        request=request,
    )
    return entry
