"""Console pages of the events app: blocked binaries, one binary, and deciding on it."""

import re
from types import SimpleNamespace
from urllib.parse import urlencode

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from hosts.errors import HostsError
from rules.errors import RulesError
from rules.services import rule_approve
from santaadmin.console import console_view, paginate

from .approvals import (
    ApprovalError,
    NotPending,
    approval_request_approve,
    approval_request_deny,
    approval_request_submit,
    clean_requester,
)
from .filtersets import BinaryFilterSet
from .forms import (
    ApprovalRequestForm,
    BinaryDecisionForm,
    NamedApprovalRequestForm,
    RequestDecisionForm,
    RequestDenyForm,
    RequestStateFilter,
)
from .models import (
    ApprovalRequest,
    ApprovalState,
    Binary,
    BinaryHost,
    BinaryUser,
    Event,
)
from .selectors import binary_coverage, binary_signing_chain, rules_matching

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
    latest = (
        Event.objects.filter(binary=binary)
        .exclude(decision="BUNDLE_BINARY")
        .order_by("-execution_time", "-id")
    )
    events = paginate(_Prefixed(request, "events_page"), latest.select_related("host"), DETAIL_ROWS)
    context = {
        "binary": binary,
        "chain": binary_signing_chain(binary),
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


# --- approval requests --------------------------------------------------------------------------

DECIDE_PERMISSIONS = ("events.change_approvalrequest", "rules.add_rule")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MAX_MACHINE_ID = 128


@console_view("events.view_approvalrequest")
def request_list(request):
    """The queue: newest first, waiting requests unless another state is chosen."""
    form = RequestStateFilter(request.GET or None)
    state = form.cleaned_data["state"] if form.is_valid() else "pending"
    requests = ApprovalRequest.objects.select_related("binary", "host").order_by(
        "-created_at", "-id"
    )
    if state != "all":
        requests = requests.filter(state=state)
    page = paginate(request, requests)
    return render(
        request,
        "events/request_list.html",
        {
            "filter": SimpleNamespace(form=form),
            "state": state,
            "page_obj": page,
            "approvals": page.object_list,
        },
    )


def _approval_or_404(pk: int) -> ApprovalRequest:
    return get_object_or_404(
        ApprovalRequest.objects.select_related(
            "binary__leaf_certificate", "host", "decided_by", "rule"
        ),
        pk=pk,
    )


def _request_context(request, approval: ApprovalRequest, form=None, deny_form=None) -> dict:
    binary = approval.binary
    others = ApprovalRequest.objects.filter(binary=binary, state=ApprovalState.PENDING).exclude(
        pk=approval.pk
    )
    context = {
        "approval": approval,
        "binary": binary,
        "binary_host": BinaryHost.objects.filter(binary=binary, host=approval.host).first(),
        "rules": rules_matching(binary),
        "others": others.select_related("host").order_by("-created_at", "-id")[:10],
        "others_count": others.count(),
    }
    if approval.state == ApprovalState.PENDING and request.user.has_perms(DECIDE_PERMISSIONS):
        coverage = binary_coverage(binary)
        context["coverage"] = coverage
        context["form"] = form or RequestDecisionForm(
            coverage=coverage,
            initial={"scope": "hosts", "machine_ids": approval.host.machine_id},
        )
        context["deny_form"] = deny_form or RequestDenyForm()
    return context


@require_http_methods(["GET", "POST"])
@console_view("events.view_approvalrequest")
def request_detail(request, pk: int):
    """One request: who asked for what and why; approve it into a rule, block, or deny."""
    approval = _approval_or_404(pk)
    if request.method == "POST":
        return _request_decide(request, approval)
    return render(request, "events/request_detail.html", _request_context(request, approval))


@console_view("events.view_approvalrequest", *DECIDE_PERMISSIONS)
def _request_decide(request, approval: ApprovalRequest):
    form = deny_form = None
    status = 400
    try:
        if approval.state != ApprovalState.PENDING:
            raise NotPending(
                f"This request was already decided ({approval.get_state_display().lower()})."
            )
        if request.POST.get("action") == "deny":
            deny_form = RequestDenyForm(request.POST)
            if deny_form.is_valid():
                approval_request_deny(
                    request=approval,
                    actor=request.user,
                    response=deny_form.cleaned_data["response"],
                )
                messages.success(
                    request,
                    f"Denied. {approval.requester} sees your message on their request page.",
                )
                return redirect("events:request_list")
        else:
            coverage = binary_coverage(approval.binary)
            form = RequestDecisionForm(request.POST, coverage=coverage)
            if form.is_valid():
                rule = approval_request_approve(
                    request=approval,
                    actor=request.user,
                    rule_type=form.cleaned_data["rule_type"],
                    policy=form.policy,
                    expires_at=form.cleaned_data["expires_at"],
                    custom_msg=form.cleaned_data["custom_msg"],
                    justification=form.cleaned_data["justification"],
                    response=form.cleaned_data["response"],
                    **form.scope_kwargs(),
                )
                verb = "Approved" if approval.state == ApprovalState.APPROVED else "Blocked"
                messages.success(
                    request,
                    f"{verb}: {rule.get_rule_type_display()} rule created. It reaches each "
                    "targeted host at its next sync; delivery is tracked below.",
                )
                return redirect("rules:rule_detail", pk=rule.pk)
    except (ApprovalError, RulesError, HostsError) as exc:
        status = 409 if isinstance(exc, NotPending) else 400
        target = form if form is not None else deny_form
        field = getattr(exc, "field", None)
        if target is not None:
            target.add_error(field if field in target.fields else None, str(exc.detail))
        else:
            messages.error(request, str(exc.detail))
        approval.refresh_from_db()
    context = _request_context(request, approval, form=form, deny_form=deny_form)
    return render(request, "events/request_detail.html", context, status=status)


def _public_not_found(request):
    """The same answer for every link that does not name a binary this Mac ran: it must not
    tell a visitor which machines or binaries exist."""
    return render(request, "events/request_not_found.html", status=404)


def _public_url(sha256: str, machine_id: str, user: str) -> str:
    query = urlencode({"sha": sha256, "machine": machine_id, "user": user})
    return f"{reverse('events:request_public')}?{query}"


@never_cache
@require_http_methods(["GET", "POST"])
def request_public(request):
    """The page Santa's block dialog opens (event_detail_url): ask for a blocked binary, and
    see the analysts' answer. No account: the link names the file, the Mac and the user."""
    sha256 = request.GET.get("sha", "").strip()
    # Machine ids never contain spaces; the agent does not encode the placeholders it fills in,
    # so a "+" in a machine id arrives as a space.
    machine_id = request.GET.get("machine", "").strip().replace(" ", "+")
    user = request.GET.get("user", "").strip()
    if not _SHA256.fullmatch(sha256) or not machine_id or len(machine_id) > _MAX_MACHINE_ID:
        return _public_not_found(request)
    seen = (
        BinaryHost.objects.select_related("binary__leaf_certificate", "host")
        .filter(binary_id=sha256.lower(), host__machine_id=machine_id)
        .first()
    )
    if seen is None:
        return _public_not_found(request)
    binary, host = seen.binary, seen.host
    if user:
        try:
            user = clean_requester(user)
        except ApprovalError as exc:
            return render(
                request,
                "events/request_public.html",
                {"binary": binary, "link_error": exc.detail},
                status=400,
            )
    latest = (
        ApprovalRequest.objects.filter(binary=binary, host=host, requester=user)
        .order_by("-created_at", "-id")
        .first()
        if user
        else None
    )
    # Ask (again) when nothing was asked yet, to change the reason of a waiting request, or
    # when the Mac blocked the program again after the decision (say, the rule expired).
    can_ask = (
        latest is None
        or latest.state == ApprovalState.PENDING
        or (
            latest.decided_at is not None
            and seen.last_at > latest.decided_at
            and seen.last_decision.startswith("BLOCK")
        )
    )
    form_class = ApprovalRequestForm if user else NamedApprovalRequestForm
    status = 200
    form = None
    if request.method == "POST":
        form = form_class(request.POST)
        if not can_ask:
            messages.error(request, "This request was already decided: see the answer below.")
            form, status = None, 409
        elif form.is_valid():
            requester = user or form.cleaned_data["name"]
            try:
                approval_request_submit(
                    binary=binary,
                    host=host,
                    requester=requester,
                    reason=form.cleaned_data["reason"],
                )
            except ApprovalError as exc:
                field = {"requester": "name"}.get(exc.field, exc.field)
                form.add_error(field if field in form.fields else None, exc.detail)
            else:
                messages.success(
                    request,
                    "Your request was sent. The analysts' answer will appear on this page.",
                )
                return redirect(_public_url(binary.sha256, host.machine_id, requester))
        if status == 200:
            status = 400
    elif can_ask:
        initial = {"reason": latest.reason} if latest and latest.state == "pending" else None
        form = form_class(initial=initial)
    return render(
        request,
        "events/request_public.html",
        {
            "binary": binary,
            "user_name": user,
            "latest": latest,
            "form": form,
            "can_ask": can_ask,
        },
        status=status,
    )
