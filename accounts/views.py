"""Console pages of the accounts app: a person's API tokens (an admin sees everyone's)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from santaadmin.console import ANY_ROLE, console_view

from .errors import AccountsError
from .forms import ApiTokenForm
from .models import ApiToken
from .selectors import api_tokens_visible_to
from .services import api_token_create, api_token_revoke


def _list(request, form: ApiTokenForm, status: int = 200):
    user = request.user
    context = {
        "form": form,
        "own": ApiToken.objects.filter(user=user).select_related("user"),
        "others": (
            ApiToken.objects.exclude(user=user)
            .select_related("user")
            .order_by("user__username", "-created_at")
            if user.has_perm("accounts.view_apitoken")
            else None
        ),
        "can_revoke_others": user.has_perm("accounts.change_apitoken"),
    }
    return render(request, "accounts/token_list.html", context, status=status)


@console_view(ANY_ROLE)
@require_GET
def token_list(request):
    return _list(request, ApiTokenForm())


@console_view(ANY_ROLE)
@require_http_methods(["POST"])  # inside: a GET without a role is 403, not 405
@never_cache
def token_create(request):
    """Create one of the signed-in user's tokens and show its key, once, in this response
    (never stored, never redirected to: a reload re-submits and is refused as a duplicate
    name)."""
    form = ApiTokenForm(request.POST)
    if form.is_valid():
        try:
            token, key = api_token_create(
                user=request.user,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=form.expires_at,
            )
        except AccountsError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.detail)
        else:
            return render(request, "accounts/token_created.html", {"token": token, "key": key})
    return _list(request, form, status=400)


@console_view(ANY_ROLE)
@require_http_methods(["POST"])
def token_revoke(request, pk: int):
    """Revoke one's own token; an admin may revoke anyone's. Others' tokens are a 404."""
    token = api_tokens_visible_to(request.user).filter(pk=pk).first()
    if token is None or (
        token.user_id != request.user.pk and not request.user.has_perm("accounts.change_apitoken")
    ):
        raise Http404("No such token.")
    if token.revoked_at is not None:
        messages.info(request, f"Token {token.prefix} was already revoked.")
    else:
        api_token_revoke(token=token)
        messages.success(request, f"Token {token.prefix} ({token.name}) revoked.")
    return redirect("accounts:token_list")
