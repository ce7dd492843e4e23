"""API permissions: every request needs the model permission its method implies.

GET/HEAD need `view_<model>` (DRF's stock class lets any authenticated user read), POST
`add_`, PUT/PATCH `change_`, DELETE `delete_`. Roles grant these (santaadmin/roles.py).
A custom action whose meaning is not its method's (POST .../revoke/ changes an enrollment,
POST .../bulk-delete/ deletes rules) names its own in the viewset's `action_permissions`.
A signed-in user refused here is recorded in the audit trail (auth.permission_denied).
"""

from rest_framework.permissions import DjangoModelPermissions

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
        if custom is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
            return list(custom)
        return self.get_required_permissions(request.method, self._queryset(view).model)

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if getattr(view, "_ignore_model_permissions", False):
            return True
        required = self.view_permissions(request, view)
        allowed = user.has_perms(required)
        if not allowed:
            record_permission_denied(request, required)
        return allowed
