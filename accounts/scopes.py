"""What an API token may do: `<area>:read` and `<area>:write` (write implies read) for each
area, plus `read` (every area read) and `write` (everything).

A token never widens its user's role: a request needs both the role's model permission
(santaadmin.permissions.RolePermission) and the token's scope. The area of an API view is the
app label of its queryset's model, unless the view sets `scope_area`.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InvalidScope

READ, WRITE = "read", "write"
AREAS = ("rules", "hosts", "events", "audit", "reports")
SCOPES = (READ, WRITE, *(f"{area}:{mode}" for area in AREAS for mode in (READ, WRITE)))

_AREA_TEXT = {
    "rules": "rules and their delivery",
    "hosts": "hosts, tag rules, configuration profiles and fan-outs",
    "events": "events",
    "audit": "the audit trail",
    "reports": "reports",
}
SCOPE_CHOICES = [
    (READ, "read — read everything"),
    (WRITE, "write — read and change everything"),
    *(
        (
            f"{area}:{mode}",
            f"{area}:{mode} — {'read' if mode == READ else 'read and change'} {_AREA_TEXT[area]}",
        )
        for area in AREAS
        for mode in (READ, WRITE)
    ),
]


def normalize_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes, deduplicated and in the canonical order; unknown ones are refused."""
    if isinstance(scopes, str) or not isinstance(scopes, Iterable):
        raise InvalidScope("Scopes are a list of scope names.", field="scopes")
    wanted = list(scopes)
    unknown = sorted({str(scope) for scope in wanted if scope not in SCOPES})
    if unknown:
        raise InvalidScope(
            f"Unknown scope{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"known scopes: {', '.join(SCOPES)}.",
            field="scopes",
        )
    if not wanted:
        raise InvalidScope("Choose at least one scope.", field="scopes")
    return [scope for scope in SCOPES if scope in wanted]


def required_scope(area: str | None, *, write: bool) -> str:
    """The narrowest scope that allows a request: `rules:write`, `events:read`... A view
    whose area is unknown needs the `read` or `write` shorthand (fail closed)."""
    mode = WRITE if write else READ
    return f"{area}:{mode}" if area in AREAS else mode


def allows(scopes: Iterable[str], area: str | None, *, write: bool) -> bool:
    held = set(scopes)
    if WRITE in held:
        return True
    if area not in AREAS:
        return not write and READ in held
    if write:
        return f"{area}:{WRITE}" in held
    return bool(held & {READ, f"{area}:{READ}", f"{area}:{WRITE}"})


def area_of(view, model) -> str | None:
    """The view's `scope_area`, else the app label of its model."""
    area = getattr(view, "scope_area", None)
    if area:
        return area
    return model._meta.app_label if model is not None else None
