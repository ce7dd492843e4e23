"""Console pages of the rules app: the list (with export), one rule with its history and
delivery, creating, editing and deleting a rule, and importing rule files."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Count, Prefetch
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_safe

from audit.models import AuditEntry
from events.models import Binary
from hosts.errors import HostsError
from hosts.models import Host, Tag
from santaadmin.console import console_view, paginate

from . import services
from .errors import InvalidImport, RulesError
from .filtersets import BINARY_FIELD, RuleFilterSet
from .forms import RuleDeleteForm, RuleForm, RuleImportForm
from .imports import EXPORTS, MAX_IMPORT_BYTES, ImportProblem, export_response, parse_rules
from .models import Rule, RuleVersion
from .tracking import rule_delivery

DETAIL_ROWS = 25
SCOPE_HOSTS_SHOWN = 100
MATCHED_BINARIES = 20


class _Prefixed:
    """A request whose ?page comes from another parameter (several paginated tables)."""

    def __init__(self, request, parameter: str):
        self.GET = {"page": request.GET.get(parameter)}


def _rules():
    return Rule.objects.select_related("created_by", "updated_by", "fanout")


# --- list and export ------------------------------------------------------------------------------


@require_safe
@console_view("rules.view_rule")
def rule_list(request):
    params = request.GET.copy()
    export = params.pop("export", [None])[-1]
    params.pop("page", None)
    filterset = RuleFilterSet(
        params or None,
        queryset=_rules().prefetch_related(
            Prefetch("tags", queryset=Tag.objects.only("name")),
            Prefetch("excluded_tags", queryset=Tag.objects.only("name")),
        ),
    )
    valid = filterset.is_valid() if filterset.is_bound else True
    if export is not None:
        if export not in EXPORTS or not valid:
            return render(
                request,
                "rules/rule_list.html",
                _list_context(request, filterset, valid=valid, bad_export=export not in EXPORTS),
                status=400,
            )
        return export_response(filterset.qs, export)
    return render(
        request,
        "rules/rule_list.html",
        _list_context(request, filterset, valid=valid),
        status=200 if valid else 400,
    )


def _list_context(request, filterset, *, valid: bool, bad_export: bool = False) -> dict:
    if valid:
        page = paginate(request, filterset.qs)
        rules = list(page.object_list)
        counts = _host_counts([r.pk for r in rules])
        for rule in rules:
            rule.host_count = counts.get(rule.pk, 0)
    else:
        page, rules = None, []
    return {
        "filter": filterset,
        "filters_valid": valid,
        "bad_export": bad_export,
        "page_obj": page,
        "rules": rules,
    }


def _host_counts(rule_ids: list[int]) -> dict[int, int]:
    """Listed hosts per rule for one page (a rule may list a thousand: count, not load)."""
    rows = (
        Rule.hosts.through.objects.filter(rule_id__in=rule_ids)
        .values("rule_id")
        .annotate(n=Count("id"))
        .values_list("rule_id", "n")
    )
    return dict(rows)


# --- one rule -------------------------------------------------------------------------------------


def _rule_or_404(pk: int) -> Rule:
    return get_object_or_404(_rules(), pk=pk)


def _delivery_context(rule: Rule) -> dict:
    delivery = rule_delivery(rule)
    percent = None
    if delivery is not None and delivery.target_hosts:
        percent = round(100 * delivery.confirmed_hosts / delivery.target_hosts)
    return {
        "rule": rule,
        "delivery": delivery,
        "delivery_percent": percent,
        "delivery_done": delivery is None or delivery.pending_hosts <= 0,
    }


def _history(request, rule: Rule) -> dict:
    versions_page = paginate(
        _Prefixed(request, "history_page"),
        RuleVersion.objects.filter(rule_id=rule.pk)
        .select_related("changed_by")
        .order_by("-rev_from", "-id"),
        DETAIL_ROWS,
    )
    versions = list(versions_page.object_list)
    tag_ids = {t for v in versions for t in (*v.tag_ids, *v.excluded_tag_ids)}
    host_ids = {h for v in versions for h in v.host_ids}
    tag_names = dict(Tag.objects.filter(pk__in=tag_ids).values_list("pk", "name"))
    machine_ids = dict(Host.objects.filter(pk__in=host_ids).values_list("pk", "machine_id"))
    for version in versions:
        version.tag_names = [_named(tag_names, t) for t in version.tag_ids]
        version.excluded_tag_names = [_named(tag_names, t) for t in version.excluded_tag_ids]
        version.machine_ids = [_named(machine_ids, h) for h in version.host_ids]
    audit_page = paginate(
        _Prefixed(request, "audit_page"),
        AuditEntry.objects.filter(object_type="rule", object_id=str(rule.pk)).order_by("-id"),
        DETAIL_ROWS,
    )
    return {"versions_page": versions_page, "versions": versions, "audit_page": audit_page}


def _named(names: dict, pk: int) -> str:
    return names.get(pk) or f"#{pk} (deleted)"


def _matched_binaries(rule: Rule) -> list[Binary]:
    field = BINARY_FIELD.get(rule.rule_type)
    if field is None:
        return []
    return list(
        Binary.objects.filter(**{field: rule.identifier}).order_by(
            "-host_count", "-executions", "sha256"
        )[:MATCHED_BINARIES]
    )


@require_safe
@console_view("rules.view_rule")
def rule_detail(request, pk: int):
    rule = _rule_or_404(pk)
    hosts = rule.hosts.order_by("machine_id")
    context = {
        **_delivery_context(rule),
        **_history(request, rule),
        "tags": list(rule.tags.all()),
        "excluded_tags": list(rule.excluded_tags.all()),
        "hosts": list(hosts.only("pk", "machine_id", "hostname")[:SCOPE_HOSTS_SHOWN]),
        "host_count": hosts.count(),
        "binaries": _matched_binaries(rule),
    }
    return render(request, "rules/rule_detail.html", context)


@require_safe
@console_view("rules.view_rule")
def rule_delivery_fragment(request, pk: int):
    rule = _rule_or_404(pk)
    return render(request, "rules/_delivery.html", _delivery_context(rule))


# --- create, edit, delete -------------------------------------------------------------------------


def _form_page(request, form: RuleForm, rule: Rule | None, status: int = 200):
    context = {"form": form, "rule": rule, "TIME_ZONE": timezone.get_current_timezone_name()}
    return render(request, "rules/rule_form.html", context, status=status)


@require_http_methods(["GET", "POST"])
@console_view("rules.add_rule")
def rule_create(request):
    if request.method == "GET":
        return _form_page(request, RuleForm(), None)
    form = RuleForm(request.POST)
    if form.is_valid():
        try:
            rule = services.rule_create(
                data=form.to_input(),
                actor=request.user,
                justification=form.cleaned_data["justification"],
            )
        except (RulesError, HostsError) as exc:
            form.add_service_error(exc)
        else:
            messages.success(
                request,
                f"{rule.get_rule_type_display()} rule created. It reaches each targeted host "
                "at its next sync; delivery is tracked below.",
            )
            return redirect("rules:rule_detail", pk=rule.pk)
    return _form_page(request, form, None, status=400)


@require_http_methods(["GET", "POST"])
@console_view("rules.view_rule", "rules.change_rule")
def rule_edit(request, pk: int):
    rule = _rule_or_404(pk)
    if request.method == "GET":
        return _form_page(request, RuleForm(rule=rule), rule)
    form = RuleForm(request.POST, rule=rule)
    if form.is_valid():
        try:
            rule = services.rule_update(
                rule=rule,
                data=form.to_input(),
                actor=request.user,
                justification=form.cleaned_data["justification"],
            )
        except (RulesError, HostsError) as exc:
            form.add_service_error(exc)
        except (Rule.DoesNotExist, RuleVersion.DoesNotExist):
            messages.error(request, "This rule was deleted meanwhile.")
            return redirect("rules:rule_list")
        else:
            messages.success(
                request, "Rule saved. Hosts get the change at their next sync; see delivery below."
            )
            return redirect("rules:rule_detail", pk=rule.pk)
    return _form_page(request, form, rule, status=400)


@require_http_methods(["GET", "POST"])
@console_view("rules.view_rule", "rules.delete_rule")
def rule_delete(request, pk: int):
    rule = _rule_or_404(pk)
    if request.method == "GET":
        return render(request, "rules/rule_delete.html", {"rule": rule, "form": RuleDeleteForm()})
    form = RuleDeleteForm(request.POST)
    if not form.is_valid():
        return render(request, "rules/rule_delete.html", {"rule": rule, "form": form}, status=400)
    services.rule_delete(
        rule=rule, actor=request.user, justification=form.cleaned_data["justification"]
    )
    messages.success(
        request,
        f"Rule deleted: {rule.get_rule_type_display()} {rule.identifier}. Hosts that held it "
        "get REMOVE at their next sync.",
    )
    return redirect("rules:rule_list")


# --- import ---------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@console_view("rules.add_rule")
def rule_import(request):
    if request.method == "GET":
        return render(request, "rules/rule_import.html", {"form": RuleImportForm()})
    form = RuleImportForm(request.POST, request.FILES)
    if form.is_valid():
        created = _import(request, form)
        if created is not None:
            messages.success(
                request,
                f"Imported {created} rule{'s' if created != 1 else ''}. Hosts get them at their "
                "next sync.",
            )
            return redirect("rules:rule_list")
    return render(request, "rules/rule_import.html", {"form": form}, status=400)


def _import(request, form: RuleImportForm) -> int | None:
    """Create the file's rules (all or none); None, with the problem on the form, if refused."""
    upload = form.cleaned_data["file"]
    try:
        parsed = parse_rules(
            upload.read(MAX_IMPORT_BYTES + 1), form.cleaned_data["file_format"], upload.name or ""
        )
    except ImportProblem as exc:
        form.add_error("file", exc.detail)
        return None
    try:
        created = services.rules_import(
            rules=parsed.rules,
            actor=request.user,
            justification=form.cleaned_data["justification"],
            **form.scope_kwargs(),
        )
    except (RulesError, HostsError) as exc:
        field = getattr(exc, "field", None)
        if field in services.SCOPE_FIELDS:
            form.add_error(field, str(exc.detail))
        elif isinstance(exc, InvalidImport):
            form.add_error("file", exc.detail)
        else:
            form.add_error("file", f"The file: {exc.detail} Nothing was imported.")
        return None
    for note in parsed.notes:
        messages.warning(request, note)
    return len(created)
