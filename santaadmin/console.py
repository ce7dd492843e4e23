"""What every console page shares: role checks, pagination, and the JSON-or-HTML split.

Every console view is wrapped in `console_view(*permissions)`: anonymous visitors are sent to
the sign-in page, signed-in users without the permissions get 403 (recorded in the audit
trail). The role groups hold the permissions (santaadmin.roles), so a page checks
permissions, never group names. `console_view(ANY_ROLE)` is a page for anyone holding a role
(their own API tokens): it checks santaadmin.roles.has_any_role.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator

from audit.signals import record_permission_denied

from .roles import has_any_role

PAGE_SIZE = 50
# A pseudo-permission for console_view: any role will do.
ANY_ROLE = "any_role"


def _allowed(user, permissions) -> bool:
    if ANY_ROLE in permissions:
        if not has_any_role(user):
            return False
        permissions = [p for p in permissions if p != ANY_ROLE]
    return user.has_perms(permissions)


def console_view(*permissions: str):
    """Require a signed-in user holding every one of `permissions` (app_label.codename, or
    ANY_ROLE)."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not _allowed(request.user, permissions):
                record_permission_denied(request, permissions)
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapper.console_permissions = permissions  # read by the permission tests
        return login_required(wrapper)

    return decorate


def paginate(request, queryset, per_page: int = PAGE_SIZE):
    """One page of `queryset` for ?page=N (out-of-range pages show the last one)."""
    paginator = Paginator(queryset, per_page)
    number = request.GET.get("page") or 1
    try:
        return paginator.page(number)
    except PageNotAnInteger:
        return paginator.page(1)
    except EmptyPage:
        return paginator.page(paginator.num_pages)
