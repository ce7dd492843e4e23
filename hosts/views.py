"""Console pages of the hosts app: the fleet, one host, and the operator actions on it."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from events.models import BinaryHost, Event
from rules.delivery import clean_page
from rules.models import Policy, RuleType
from rules.tracking import host_delivery
from santaadmin.console import console_view, paginate

from .errors import HostsError
from .filtersets import HostConsoleFilterSet
from .forms import HostCleanSyncForm, HostModeForm, HostTagsForm
from .models import ConfigurationProfile, Host, HostSync, HostTag, TagSource
from .selectors import SETTING_FIELDS, configuration_for_host, revision_current
from .services import host_request_clean_sync, host_set_mode_override, host_set_tags

DETAIL_ROWS = 25
SYNC_HISTORY_ROWS = 20

# The columns the list shows: nothing else is read (no JSON blobs of 100,000 hosts).
LIST_FIELDS = (
    "id",
    "machine_id",
    "hostname",
    "serial_number",
    "primary_user",
    "client_mode_override",
    "reported_client_mode",
    "santa_version",
    "os_version",
    "os_build",
    "last_postflight_at",
    "stale_since",
    "drift_detected_at",
    "clean_sync_requested",
)


def _current_tags():
    """Open tag spans with their tag, in name order, as `current_tag_spans` (one query for a
    whole page of hosts)."""
    return Prefetch(
        "tag_spans",
        queryset=HostTag.objects.filter(rev_to__isnull=True)
        .select_related("tag")
        .order_by("tag__name", "source"),
        to_attr="current_tag_spans",
    )


def health(host: Host) -> list[tuple[str, str]]:
    """(label, badge class) pairs: never synced, or synced / stale / drifted."""
    if host.last_postflight_at is None:
        return [("never synced", "")]
    badges = []
    if host.stale_since is not None:
        badges.append(("stale", "warn"))
    if host.drift_detected_at is not None:
        badges.append(("drifted", "bad"))
    return badges or [("synced", "good")]


@console_view("hosts.view_host")
def host_list(request):
    queryset = Host.objects.only(*LIST_FIELDS).prefetch_related(_current_tags())
    filterset = HostConsoleFilterSet(request.GET or None, queryset=queryset)
    page = paginate(request, filterset.qs)
    hosts = list(page.object_list)
    for host in hosts:
        host.health = health(host)
        host.effective_mode = host.client_mode_override or host.reported_client_mode
    return render(
        request,
        "hosts/host_list.html",
        {"filter": filterset, "page_obj": page, "hosts": hosts},
    )


class _Prefixed:
    """A request whose ?page comes from another parameter (several paginated tables)."""

    def __init__(self, request, parameter: str):
        self.GET = {"page": request.GET.get(parameter)}


def _host_or_404(pk: int) -> Host:
    return get_object_or_404(Host.objects.select_related("enrollment"), pk=pk)


def _manual_tag_names(host: Host) -> list[str]:
    return sorted(
        HostTag.objects.filter(host=host, rev_to__isnull=True, source=TagSource.MANUAL)
        .values_list("tag__name", flat=True)
        .distinct()
    )


def _configuration_rows(host: Host, tag_ids) -> list[dict]:
    configuration = configuration_for_host(host, tag_ids)
    rows = []
    for name in SETTING_FIELDS:
        model_field = ConfigurationProfile._meta.get_field(name)
        value = getattr(configuration, name)
        rows.append(
            {
                "name": name,
                "label": str(model_field.verbose_name).capitalize(),
                "managed": value is not None,
                "display": _setting_display(value, model_field),
                "source": configuration.sources.get(name, ""),
            }
        )
    return rows


def _setting_display(value, model_field) -> str:
    if value is None:
        return "not managed"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "(none)"
    if value == "":
        return "(empty: clears the agent's value)"
    label = str(dict(model_field.choices or ()).get(value, value))
    if label.lower() != str(value).lower():
        return f"{value} ({label})"
    return str(value)


def _rules_page(request, host: Host, revision: int) -> dict:
    """One page of the host's effective rules, by key (?rules_after=TYPE:IDENTIFIER): only
    that page is resolved, however many rules the host holds."""
    rule_type, sep, identifier = request.GET.get("rules_after", "").partition(":")
    after = (rule_type, identifier) if sep and rule_type in RuleType.values else None
    page = clean_page(host.pk, revision, after, DETAIL_ROWS)
    return {
        "rules": [rule for rule in page.rules if rule.policy != Policy.REMOVE],
        "rules_first_page": after is None,
        "rules_next": None if page.done else f"{page.last_key[0]}:{page.last_key[1]}",
    }


def _detail_context(request, host: Host, forms: dict | None = None) -> dict:
    spans = list(
        HostTag.objects.filter(host=host, rev_to__isnull=True)
        .select_related("tag")
        .order_by("tag__name")
    )
    manual = sorted({s.tag.name for s in spans if s.source == TagSource.MANUAL})
    automatic = sorted({s.tag.name for s in spans if s.source == TagSource.AUTO})
    revision = revision_current()
    context = {
        "host": host,
        "health": health(host),
        "manual_tags": manual,
        "automatic_tags": automatic,
        "configuration": _configuration_rows(host, {s.tag_id for s in spans}),
        "revision": revision,
        **_rules_page(request, host, revision),
        # One page of pending changes is enough to show (the API walks further).
        "delivery": host_delivery(host, max_pages=1),
        "events_page": paginate(
            _Prefixed(request, "events_page"),
            Event.objects.filter(host=host)
            .exclude(decision="BUNDLE_BINARY")
            .order_by("-execution_time", "-id"),
            DETAIL_ROWS,
        ),
        "binaries_page": paginate(
            _Prefixed(request, "binaries_page"),
            BinaryHost.objects.filter(host=host)
            .select_related("binary")
            .order_by("-last_at", "id"),
            DETAIL_ROWS,
        ),
        "syncs": list(
            HostSync.objects.filter(host=host).order_by("-finished_at", "-id")[:SYNC_HISTORY_ROWS]
        ),
    }
    if request.user.has_perm("hosts.change_host"):
        forms = forms or {}
        context["tags_form"] = forms.get("tags_form") or HostTagsForm(
            initial={"tags": ", ".join(manual)}
        )
        context["mode_form"] = forms.get("mode_form") or HostModeForm(
            initial={"client_mode": host.client_mode_override}
        )
        context["clean_form"] = forms.get("clean_form") or HostCleanSyncForm(
            initial={"kind": host.clean_sync_requested or "CLEAN"}
        )
    return context


@console_view("hosts.view_host")
def host_detail(request, pk: int):
    host = _host_or_404(pk)
    return render(request, "hosts/host_detail.html", _detail_context(request, host))


def _invalid(request, host: Host, name: str, form) -> object:
    context = _detail_context(request, host, {name: form})
    return render(request, "hosts/host_detail.html", context, status=400)


@console_view("hosts.view_host", "hosts.change_host")
@require_http_methods(["POST"])  # inside: a GET without the role is 403, not 405
def host_tags(request, pk: int):
    """Replace the host's assigned tags (automatic ones are the tag rules' business)."""
    host = _host_or_404(pk)
    form = HostTagsForm(request.POST)
    if form.is_valid():
        names = form.cleaned_data["tags"]
        if names == _manual_tag_names(host):
            messages.info(request, "The assigned tags are unchanged.")
            return redirect("hosts:host_detail", pk=host.pk)
        try:
            host_set_tags(host=host, tag_names=names, justification=form.justification_text)
        except HostsError as exc:
            form.add_error("tags", exc.detail)
        else:
            shown = ", ".join(names) if names else "none"
            messages.success(
                request,
                f"Assigned tags saved ({shown}). Rules of the tags gained or lost reach the "
                "host at its next sync.",
            )
            return redirect("hosts:host_detail", pk=host.pk)
    return _invalid(request, host, "tags_form", form)


@console_view("hosts.view_host", "hosts.change_host")
@require_http_methods(["POST"])  # inside: a GET without the role is 403, not 405
def host_mode(request, pk: int):
    host = _host_or_404(pk)
    form = HostModeForm(request.POST)
    if form.is_valid():
        mode = form.cleaned_data["client_mode"]
        try:
            host_set_mode_override(
                host=host, client_mode=mode, justification=form.justification_text
            )
        except (HostsError, ValueError) as exc:
            form.add_error("client_mode", f"Invalid mode: {exc}")
        else:
            if mode:
                text = f"Mode overridden: {mode} from the host's next preflight."
            else:
                text = "Override removed: the host follows its configuration from its next sync."
            messages.success(request, text)
            return redirect("hosts:host_detail", pk=host.pk)
    return _invalid(request, host, "mode_form", form)


@console_view("hosts.view_host", "hosts.change_host")
@require_http_methods(["POST"])  # inside: a GET without the role is 403, not 405
def host_clean_sync(request, pk: int):
    host = _host_or_404(pk)
    form = HostCleanSyncForm(request.POST)
    if form.is_valid():
        kind = form.cleaned_data["kind"]
        try:
            host_request_clean_sync(host=host, kind=kind, justification=form.justification_text)
        except (HostsError, ValueError) as exc:
            form.add_error("kind", f"Invalid clean sync: {exc}")
        else:
            if kind:
                text = f"{kind} sync requested: the host's next preflight answers {kind}."
            else:
                text = "Clean sync request cancelled."
            messages.success(request, text)
            return redirect("hosts:host_detail", pk=host.pk)
    return _invalid(request, host, "clean_form", form)
