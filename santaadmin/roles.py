"""The three roles, as Django groups with model permissions.

* **admin** — everything, including users, roles, enrollments, configuration and everyone's
  API tokens.
* **analyst** — reads everything; creates, changes and deletes rules and tag rules; edits
  hosts (tags, mode override, clean syncs). Cannot manage users, enrollments or configuration
  profiles.
* **auditor** — reads (and exports) everything; changes nothing. Generating a report
  (`reports.add_report`) is an export, not a change: auditors and analysts hold it.

Every API endpoint checks these permissions (santaadmin.permissions.RolePermission). Anyone
with a role manages their own API tokens (accounts); a token's scopes narrow its user's role,
never widen it.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions

ADMIN, ANALYST, AUDITOR = "admin", "analyst", "auditor"
ROLES = (ADMIN, ANALYST, AUDITOR)
DOMAIN_APPS = ("hosts", "rules", "events", "audit", "reports")

ANALYST_WRITES = {
    "rules": {"add_rule", "change_rule", "delete_rule"},
    # Deciding approval requests (the decision itself creates a rule: add_rule is checked too).
    "events": {"change_approvalrequest"},
    "hosts": {
        "change_host",
        "add_tag",
        "change_tag",
        "add_tagrule",
        "change_tagrule",
        "delete_tagrule",
    },
}
# What analysts and auditors may do beyond reading: generate reports (an export changes no
# domain data, and each generation is recorded in the audit trail).
READER_WRITES = {"reports": {"add_report"}}
ADMIN_APPS = ("hosts", "rules", "events", "audit", "reports", "auth", "accounts")


def has_any_role(user) -> bool:
    """Whether an active user holds a role: may read something of the domain apps (any
    `view_` permission there). Checks permissions, never group names."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return any(
        perm.split(".", 1)[0] in DOMAIN_APPS and perm.split(".", 1)[1].startswith("view_")
        for perm in user.get_all_permissions()
    )


def role_permissions(Permission) -> dict[str, set]:
    perms = {role: set() for role in ROLES}
    for perm in Permission.objects.select_related("content_type").filter(
        content_type__app_label__in=ADMIN_APPS
    ):
        app = perm.content_type.app_label
        perms[ADMIN].add(perm.pk)
        if app in DOMAIN_APPS and perm.codename.startswith("view_"):
            perms[ANALYST].add(perm.pk)
            perms[AUDITOR].add(perm.pk)
        if perm.codename in ANALYST_WRITES.get(app, ()):
            perms[ANALYST].add(perm.pk)
        if perm.codename in READER_WRITES.get(app, ()):
            perms[ANALYST].add(perm.pk)
            perms[AUDITOR].add(perm.pk)
    return perms


def ensure_roles(sender=None, apps=global_apps, using="default", **kwargs):
    """Create or refresh the role groups after migrations (idempotent)."""
    try:
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
    except LookupError:
        return
    for label in ADMIN_APPS:
        try:
            create_permissions(global_apps.get_app_config(label), verbosity=0, using=using)
        except LookupError:
            continue
    for role, permission_ids in role_permissions(Permission).items():
        group, _ = Group.objects.using(using).get_or_create(name=role)
        group.permissions.set(permission_ids)
