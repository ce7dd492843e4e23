"""Console pages of the events app: blocked binaries, one binary, and deciding on it."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from hosts.errors import HostsError
from rules.errors import RulesError
from rules.services import rule_approve
from santaadmin.console import console_view, paginate

from .filtersets import BinaryFilterSet
from .forms import BinaryDecisionForm
from .models import (
    ApprovalRequest,
    ApprovalState,
    Binary,
    BinaryHost,
    BinaryUser,
    Certificate,
    Event,
)
from .selectors import binary_coverage, rules_matching

DETAIL_ROWS = 25


@console_view("events.view_binary")
def binary_list(request):
    filterset = BinaryFilterSet(
        request.GET or None, queryset=Binary.objects.select_related("leaf_certificate")
    )
    page = paginate(request, filterset.qs)
    return render(
        request,
        "events/binary_list.html",
        {"filter": filterset, "page_obj": page, "binaries": page.object_list},
    )


def _binary_or_404(sha256: str) -> Binary:
    return get_object_or_404(
        Binary.objects.select_related("leaf_certificate"), pk=sha256.strip().lower()
    )


def _detail_context(request, binary: Binary, form=None) -> dict:
    chain_shas = [sha for sha in binary.signing_chain if isinstance(sha, str)]
    certificates = Certificate.objects.in_bulk(chain_shas)
    latest = (
        Event.objects.filter(binary=binary)
        .exclude(decision="BUNDLE_BINARY")
        .order_by("-execution_time", "-id")
    )
    events = paginate(_Prefixed(request, "events_page"), latest.select_related("host"), DETAIL_ROWS)
    context = {
        "binary": binary,
        "chain": [certificates.get(sha) or sha for sha in chain_shas],
        "latest": latest.first(),
        "hosts_page": paginate(
            _Prefixed(request, "hosts_page"),
            BinaryHost.objects.filter(binary=binary)
            .select_related("host")
            .order_by("-last_at", "id"),
            DETAIL_ROWS,
        ),
        "users_page": paginate(
            _Prefixed(request, "users_page"),
            BinaryUser.objects.filter(binary=binary).order_by("-last_at", "id"),
            DETAIL_ROWS,
        ),
        "events_page": events,
        "rules": rules_matching(binary),
        "requests": ApprovalRequest.objects.filter(
            binary=binary, state=ApprovalState.PENDING
        ).select_related("host")[:20],
    }
    if request.user.has_perm("rules.add_rule"):
        coverage = binary_coverage(binary)
        context["coverage"] = coverage
        context["form"] = form or BinaryDecisionForm(coverage=coverage)
    return context


class _Prefixed:
    """A request whose ?page comes from another parameter (several paginated tables)."""

    def __init__(self, request, parameter: str):
        self.GET = {"page": request.GET.get(parameter)}


@console_view("events.view_binary")
def binary_detail(request, sha256: str):
    binary = _binary_or_404(sha256)
    return render(request, "events/binary_detail.html", _detail_context(request, binary))


@require_http_methods(["GET", "POST"])
@console_view("events.view_binary", "rules.add_rule")
def binary_decide(request, sha256: str):
    """Approve or block: create the rule (who, why, scope) and show its delivery."""
    binary = _binary_or_404(sha256)
    if request.method == "GET":
        return redirect(f"{binary_url(binary)}#decide")
    coverage = binary_coverage(binary)
    form = BinaryDecisionForm(request.POST, coverage=coverage)
    if form.is_valid():
        try:
            rule = rule_approve(
                binary=binary,
                rule_type=form.cleaned_data["rule_type"],
                policy=form.policy,
                expires_at=form.cleaned_data["expires_at"],
                custom_msg=form.cleaned_data["custom_msg"],
                justification=form.cleaned_data["justification"],
                actor=request.user,
                **form.scope_kwargs(),
            )
        except (RulesError, HostsError) as exc:
            field = getattr(exc, "field", None)
            form.add_error(field if field in form.fields else None, str(exc.detail))
        else:
            verb = "Approved" if form.cleaned_data["decision"] == "allow" else "Blocked"
            messages.success(
                request,
                f"{verb}: {rule.get_rule_type_display()} rule created. It reaches each "
                "targeted host at its next sync; delivery is tracked below.",
            )
            return redirect("rules:rule_detail", pk=rule.pk)
    context = _detail_context(request, binary, form=form)
    return render(request, "events/binary_detail.html", context, status=400)


def binary_url(binary: Binary) -> str:
    return reverse("events:binary_detail", args=[binary.sha256])


def request_list(request, *args, **kwargs):
    raise Http404


def request_detail(request, *args, **kwargs):
    raise Http404


def request_public(request, *args, **kwargs):
    raise Http404
