"""What every console page shares: role checks, pagination, and the JSON-or-HTML split.

Every console view is wrapped in `console_view(*permissions)`: anonymous visitors are sent to
the sign-in page, signed-in users without the permissions get 403 (recorded in the audit
trail). The role groups hold the permissions (santaadmin.roles), so a page checks
permissions, never group names.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator

from audit.signals import record_permission_denied

PAGE_SIZE = 50


def console_view(*permissions: str):
    """Require a signed-in user holding every one of `permissions` (app_label.codename)."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.has_perms(permissions):
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
