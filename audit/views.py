"""Console page of the audit app: the audit log, newest first."""

from __future__ import annotations

import json

from django.shortcuts import render
from django.urls import reverse

from hosts.models import Host
from rules.models import Rule
from santaadmin.console import PAGE_SIZE, console_view

from .filtersets import AuditEntryFilterSet
from .models import AuditEntry

# Object types whose entries link to a console page, and the page.
LINKED = {"rule": (Rule, "rules:rule_detail"), "host": (Host, "hosts:host_detail")}


def _cursor(request, name: str) -> int | None:
    try:
        value = int(request.GET.get(name, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def _keyset_page(queryset, before: int | None, after: int | None, size: int = PAGE_SIZE):
    """One page by id, newest first, without COUNT(*) or OFFSET (the log has millions of rows):
    ?before=<id> goes to older entries, ?after=<id> back to newer ones. Returns (entries,
    has_newer, has_older)."""
    if after is not None:
        rows = list(queryset.filter(id__gt=after).order_by("id")[: size + 1])
        has_newer = len(rows) > size
        return rows[:size][::-1], has_newer, True
    if before is not None:
        queryset = queryset.filter(id__lt=before)
    rows = list(queryset.order_by("-id")[: size + 1])
    return rows[:size], before is not None, len(rows) > size


def _pretty(value) -> str | None:
    if value is None:
        return None
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _pk_of(entry: AuditEntry) -> int | None:
    value = entry.object_id
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def _attach_links(entries: list[AuditEntry]) -> None:
    """A link for entries about a rule or a host that still exists: one query per type for the
    whole page, none per row."""
    for object_type, (model, url_name) in LINKED.items():
        about = [(e, _pk_of(e)) for e in entries if e.object_type == object_type]
        ids = {pk for _, pk in about if pk is not None}
        if not ids:
            continue
        existing = set(model.objects.filter(pk__in=ids).values_list("pk", flat=True))
        for entry, pk in about:
            if pk in existing:
                entry.link = reverse(url_name, args=[pk])


@console_view("audit.view_auditentry")
def entry_list(request):
    filterset = AuditEntryFilterSet(request.GET or None, queryset=AuditEntry.objects.all())
    entries, has_newer, has_older = _keyset_page(
        filterset.qs, _cursor(request, "before"), _cursor(request, "after")
    )
    _attach_links(entries)
    for entry in entries:
        entry.before_json = _pretty(entry.before)
        entry.after_json = _pretty(entry.after)
    return render(
        request,
        "audit/entry_list.html",
        {
            "filter": filterset,
            "entries": entries,
            "newer": entries[0].pk if entries and has_newer else None,
            "older": entries[-1].pk if entries and has_older else None,
        },
    )
