"""manage.py apitoken create USERNAME --name NAME --scope SCOPE [--scope ...] [--expires-days N]
| list [USERNAME] | revoke PREFIX"""

from __future__ import annotations

import datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.errors import AccountsError
from accounts.models import ApiToken
from accounts.scopes import SCOPES
from accounts.services import api_token_create, api_token_revoke


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Create, list and revoke API tokens (keys are shown once, at creation)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a token; prints its key last.")
        create.add_argument("username")
        create.add_argument("--name", required=True, help="Unique among the user's tokens.")
        create.add_argument(
            "--scope",
            action="append",
            required=True,
            dest="scopes",
            help=f"Repeatable; one of: {', '.join(SCOPES)}.",
        )
        create.add_argument("--expires-days", type=_positive, default=None, metavar="N")
        listing = sub.add_parser("list", help="List tokens (keys are never shown again).")
        listing.add_argument("username", nargs="?")
        revoke = sub.add_parser("revoke", help="Revoke a token by its prefix (sat_…).")
        revoke.add_argument("prefix")

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"_{action}")(**options)
        except AccountsError as exc:
            raise CommandError(exc.detail) from None

    @staticmethod
    def _user(username: str):
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username})
        found = user.first()
        if found is None:
            raise CommandError(f"No user named {username!r}.")
        return found

    def _create(self, username, name, scopes, expires_days, **_):
        user = self._user(username)
        expires_at = (
            timezone.now() + datetime.timedelta(days=expires_days) if expires_days else None
        )
        token, key = api_token_create(user=user, name=name, scopes=scopes, expires_at=expires_at)
        expiry = f"expires {token.expires_at:%Y-%m-%d %H:%M}" if token.expires_at else "no expiry"
        self.stdout.write(
            f"Token {token.name!r} ({token.prefix}) created for {username}: scopes "
            f"{' '.join(token.scopes)}; {expiry}."
        )
        self.stdout.write("Store this key now; it cannot be shown again. Send it as")
        self.stdout.write("Authorization: Token <key>:")
        self.stdout.write(key)

    def _list(self, username=None, **_):
        tokens = ApiToken.objects.select_related("user").order_by("user__username", "-created_at")
        if username:
            tokens = tokens.filter(user=self._user(username))
        for t in tokens:
            used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
            expires = f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never"
            self.stdout.write(
                f"{t.prefix}\t{t.user.get_username()}\t{t.name}\t{t.state}\t"
                f"scopes {','.join(t.scopes)}\texpires {expires}\tlast used {used}"
            )
        if not tokens:
            self.stdout.write("No API tokens. Create one with: apitoken create USERNAME ...")

    def _revoke(self, prefix, **_):
        token = ApiToken.objects.select_related("user").filter(prefix=prefix.rstrip("…")).first()
        if token is None:
            raise CommandError(f"No API token with prefix {prefix!r} (see `apitoken list`).")
        if token.revoked_at is not None:
            self.stdout.write(f"Token {token.prefix} ({token.name}) was already revoked.")
            return
        api_token_revoke(token=token)
        self.stdout.write(
            f"Token {token.prefix} ({token.name}, {token.user.get_username()}) revoked; "
            "requests with its key are refused now."
        )
