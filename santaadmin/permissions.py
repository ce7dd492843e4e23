"""API permissions: every request needs the model permission its method implies.

GET/HEAD need `view_<model>` (DRF's stock class lets any authenticated user read), POST
`add_`, PUT/PATCH `change_`, DELETE `delete_`. Roles grant these (santaadmin/roles.py).
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

    def has_permission(self, request, view):
        allowed = super().has_permission(request, view)
        if not allowed and request.user and request.user.is_authenticated:
            queryset = self._queryset(view)
            record_permission_denied(
                request, self.get_required_permissions(request.method, queryset.model)
            )
        return allowed
