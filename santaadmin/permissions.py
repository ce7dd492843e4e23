"""API permissions: every request needs the model permission its method implies, and, when
it comes with an API token, the token's scope too.

GET/HEAD need `view_<model>` (DRF's stock class lets any authenticated user read), POST
`add_`, PUT/PATCH `change_`, DELETE `delete_`. Roles grant these (santaadmin/roles.py).
A custom action whose meaning is not its method's (POST .../revoke/ changes an enrollment,
POST .../bulk-delete/ deletes rules) names its own in the viewset's `action_permissions`.
A token (accounts.ApiToken) narrows that further: safe methods need its area's read scope,
others its write scope (accounts.scopes); a browser session has no scope limit.
A signed-in user refused here is recorded in the audit trail (auth.permission_denied).
"""

from rest_framework.permissions import SAFE_METHODS, DjangoModelPermissions

from accounts.models import ApiToken
from accounts.scopes import area_of, required_scope
from audit.signals import record_permission_denied


class RolePermission(DjangoModelPermissions):
    perms_map = {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "POST": ["%(app_label)s.add_%(model_name)s"],
        "PUT": ["%(app_label)s.change_%(model_name)s"],
        "PATCH": ["%(app_label)s.change_%(model_name)s"],
        "DELETE": ["%(app_label)s.delete_%(model_name)s"],
    }

    def view_permissions(self, request, view) -> list[str]:
        """The permissions this request needs: the action's own for an unsafe method when the
        view names them (`action_permissions = {"revoke": [...]}`), else the method's."""
        custom = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if custom is not None and request.method not in SAFE_METHODS:
            return list(custom)
        return self.get_required_permissions(request.method, self._queryset(view).model)

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if getattr(view, "_ignore_model_permissions", False):
            return True
        required = self.view_permissions(request, view)
        if not user.has_perms(required):
            record_permission_denied(request, required)
            return False
        token = request.auth if isinstance(request.auth, ApiToken) else None
        if token is None:
            return True
        area = area_of(view, self._queryset(view).model)
        write = request.method not in SAFE_METHODS
        if token.allows(area, write=write):
            return True
        needed = required_scope(area, write=write)
        # Read by DRF's check_permissions for the 403 body.
        self.message = (
            f"This API token lacks the scope {needed!r} for {request.method} on this "
            f"endpoint; its scopes: {', '.join(token.scopes) or 'none'}."
        )
        self.code = "insufficient_scope"
        record_permission_denied(request, (), scope=needed)
        return False
