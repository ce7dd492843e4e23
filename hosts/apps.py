from django.apps import AppConfig
from django.db.models.signals import post_migrate


class HostsConfig(AppConfig):
    name = "hosts"
    verbose_name = "Hosts"

    def ready(self):
        from santaadmin import checks  # noqa: F401  (registers the deploy checks)
        from santaadmin.roles import ensure_roles

        post_migrate.connect(ensure_roles, dispatch_uid="santaadmin.ensure_roles")
