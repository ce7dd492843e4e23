"""Audit entries for what does not go through a service: sign-ins, failed sign-ins,
permission denials, and changes to users and their roles (groups).

Sign-ins and failed sign-ins are recorded when they happen in a request (the sign-in page,
the admin): a test client's force_login has no request in audit.context and is not.
Changes to users and roles are recorded wherever they happen: in a request the actor is the
signed-in user; outside one (`createsuperuser`, `manage.py shell`, a script) it is
`command:<name>` when the process is a manage.py / django-admin command, else "system".

Each is written in its own transaction.atomic() (a savepoint when the caller is already in a
transaction, so it commits or rolls back with the change it records)."""

from __future__ import annotations

import os
import sys

from django.contrib.auth import get_user_model
from django.db import transaction

from .context import current_request
from .services import audit_record, audit_record_many

ANONYMOUS = "anonymous"
USER_FIELDS = ("username", "is_active", "is_staff", "is_superuser")


COMMANDS = ("manage.py", "django-admin", "django-admin.py")


def _username(user) -> str:
    return user.get_username()


def _outside_actor() -> str | None:
    """The actor name for a change made outside a request: "command:<name>" for a manage.py
    or django-admin command (read from the process's arguments), else None ("system")."""
    argv = sys.argv
    if len(argv) > 1 and os.path.basename(argv[0]) in COMMANDS and not argv[1].startswith("-"):
        return f"command:{argv[1][:100]}"
    return None


def _actor_name() -> str | None:
    return None if current_request() is not None else _outside_actor()


def record_sign_in(sender, request, user, **kwargs):
    if current_request() is None:
        return
    with transaction.atomic():
        audit_record(
            action="auth.sign_in",
            object_type="user",
            object_id=user.pk,
            object_repr=_username(user),
            actor=user,
            request=request,
        )


def record_sign_in_failed(sender, credentials, request=None, **kwargs):
    if current_request() is None:
        return
    if getattr(request, "signin_refused", False):
        return  # refused by a lockout, no password checked: the lockout is recorded once
    # Django has already replaced the password in `credentials`; only the name is kept.
    name = str(credentials.get(get_user_model().USERNAME_FIELD) or "")[:150]
    with transaction.atomic():
        audit_record(
            action="auth.sign_in_failed",
            object_type="user",
            object_id=name[:128],
            object_repr=name,
            after={"username": name},
            actor_name=ANONYMOUS,
            request=request,
        )


def record_permission_denied(request, permissions=(), *, scope: str | None = None) -> None:
    """A signed-in user was refused (console page or API call); the object is the URL path.
    `scope`: the API token scope the request lacked, when that was the reason."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return
    after = {"method": request.method, "permissions": list(permissions)}
    if scope:
        after["scope"] = scope
    with transaction.atomic():
        audit_record(
            action="auth.permission_denied",
            object_type="url",
            object_id=request.path[:128],
            object_repr=f"{request.method} {request.path}",
            after=after,
            actor=user,
            request=request,
        )


def _user_values(user) -> dict:
    return {name: getattr(user, name) for name in USER_FIELDS}


def remember_user(sender, instance, raw=False, update_fields=None, **kwargs):
    """pre_save: the tracked values as stored, for the post_save entry's "before"."""
    instance._audit_before = None
    if raw or instance.pk is None:
        return
    if update_fields is not None and not set(update_fields) & set(USER_FIELDS):
        instance._audit_before = "skip"  # e.g. last_login on sign-in: nothing tracked changed
        return
    instance._audit_before = (
        sender.objects.filter(pk=instance.pk).values(*USER_FIELDS).first() or "created"
    )


def record_user_saved(sender, instance, created, raw=False, **kwargs):
    before = getattr(instance, "_audit_before", None)
    instance._audit_before = None
    if raw or before == "skip":
        return
    after = _user_values(instance)
    if created or before in (None, "created"):
        action, before = "user.create", None
    else:
        if before == after:
            return
        action = "user.update"
    with transaction.atomic():
        audit_record(
            action=action,
            object_type="user",
            object_id=instance.pk,
            object_repr=_username(instance),
            before=before,
            after=after,
            actor_name=_actor_name(),
        )


def record_user_deleted(sender, instance, **kwargs):
    with transaction.atomic():
        audit_record(
            action="user.delete",
            object_type="user",
            object_id=instance.pk,
            object_repr=_username(instance),
            before=_user_values(instance),
            actor_name=_actor_name(),
        )


def _group_names(user) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


def remember_groups(sender, instance, action, reverse, model, pk_set, **kwargs):
    """pre_add/pre_remove/pre_clear on User.groups: the groups of each user concerned."""
    User = get_user_model()
    if reverse:  # group.user_set.add(...): instance is the group, pk_set the users
        users = User.objects.filter(pk__in=pk_set) if pk_set is not None else instance.user_set
        instance._audit_groups = {user.pk: (user, _group_names(user)) for user in users.all()}
    else:
        instance._audit_groups = {instance.pk: (instance, _group_names(instance))}


def record_groups_changed(sender, instance, action, reverse, model, pk_set, **kwargs):
    if not action.startswith("pre_"):
        remembered = getattr(instance, "_audit_groups", {})
        instance._audit_groups = {}
        changes = []
        for pk, (user, before) in remembered.items():
            after = _group_names(user)
            if after != before:
                changes.append((pk, _username(user), {"groups": before}, {"groups": after}))
        if changes:
            with transaction.atomic():
                audit_record_many(
                    action="user.groups",
                    object_type="user",
                    objects=changes,
                    actor_name=_actor_name(),
                )
        return
    remember_groups(sender, instance, action, reverse, model, pk_set, **kwargs)


def connect() -> None:
    from django.contrib.auth.signals import user_logged_in, user_login_failed
    from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

    User = get_user_model()
    user_logged_in.connect(record_sign_in, dispatch_uid="audit.sign_in")
    user_login_failed.connect(record_sign_in_failed, dispatch_uid="audit.sign_in_failed")
    pre_save.connect(remember_user, sender=User, dispatch_uid="audit.user_pre_save")
    post_save.connect(record_user_saved, sender=User, dispatch_uid="audit.user_post_save")
    post_delete.connect(record_user_deleted, sender=User, dispatch_uid="audit.user_delete")
    m2m_changed.connect(
        record_groups_changed, sender=User.groups.through, dispatch_uid="audit.user_groups"
    )
