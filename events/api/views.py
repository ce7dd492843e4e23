from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from rules.errors import RulesError

from ..approvals import approval_request_approve, approval_request_deny
from ..filtersets import (
    ApprovalRequestFilterSet,
    BinaryFilterSet,
    CertificateFilterSet,
    EventFilterSet,
)
from ..models import ApprovalRequest, Binary, Certificate, Event
from .serializers import (
    ApprovalApproveSerializer,
    ApprovalDenySerializer,
    ApprovalRequestSerializer,
    BinaryDetailSerializer,
    BinarySerializer,
    CertificateSerializer,
    EventSerializer,
)

SHA256_PATTERN = r"[0-9a-fA-F]{64}"


class EventViewSet(viewsets.ReadOnlyModelViewSet):
    """Execution events as agents reported them; filter by machine, binary, decision, time."""

    serializer_class = EventSerializer
    filterset_class = EventFilterSet
    queryset = Event.objects.select_related("host").order_by("-execution_time", "-id")


class _BySha256:
    """Lookup by SHA-256, in either case."""

    lookup_field = "sha256"
    lookup_value_regex = SHA256_PATTERN

    def get_object(self):
        self.kwargs[self.lookup_field] = self.kwargs[self.lookup_field].lower()
        return super().get_object()


class BinaryViewSet(_BySha256, viewsets.ReadOnlyModelViewSet):
    """Binaries seen in events, with their execution statistics; the console's filters.

    Like the console's list, the list holds binaries that were blocked or would have been
    (monitor mode) unless `outcome` says otherwise (`outcome=any`: every executed binary),
    sorted by impact unless `ordering` says otherwise. A binary's page is reachable by its
    SHA-256 whatever its outcome."""

    filterset_class = BinaryFilterSet

    def get_queryset(self):
        return Binary.objects.select_related("leaf_certificate")

    def get_serializer_class(self):
        return BinarySerializer if self.action == "list" else BinaryDetailSerializer

    def filter_queryset(self, queryset):
        # The list's filters (and their default outcome) are not conditions on one binary.
        return super().filter_queryset(queryset) if self.action == "list" else queryset


class CertificateViewSet(_BySha256, viewsets.ReadOnlyModelViewSet):
    """Signing certificates seen in binaries' signing chains."""

    serializer_class = CertificateSerializer
    filterset_class = CertificateFilterSet
    queryset = Certificate.objects.order_by("cn", "sha256")


class ApprovalRequestViewSet(viewsets.ReadOnlyModelViewSet):
    """What blocked users asked for from Santa's dialog; approve into a rule, or deny.

    Approving needs `events.change_approvalrequest` and `rules.add_rule` (it creates a rule);
    denying needs `events.change_approvalrequest`. A request already decided is a 409."""

    serializer_class = ApprovalRequestSerializer
    filterset_class = ApprovalRequestFilterSet
    action_permissions = {
        "approve": ["events.change_approvalrequest", "rules.add_rule"],
        "deny": ["events.change_approvalrequest"],
    }

    def get_queryset(self):
        return ApprovalRequest.objects.select_related("binary", "host", "decided_by").order_by(
            "-created_at", "-id"
        )

    def _output(self, approval: ApprovalRequest) -> Response:
        return Response(ApprovalRequestSerializer(self.get_queryset().get(pk=approval.pk)).data)

    @extend_schema(request=ApprovalApproveSerializer, responses={200: ApprovalRequestSerializer})
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk=None) -> Response:
        """Decide with a rule for the request's binary: an allow policy approves the request,
        a block policy closes it as denied with the rule attached. `justification` is
        required (kept as the rule's comment and in the audit trail); `response` is what the
        requester reads."""
        approval = self.get_object()
        payload = ApprovalApproveSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            approval_request_approve(
                request=approval,
                actor=request.user,
                rule_type=data["rule_type"],
                policy=data["policy"],
                tags=data.get("tags", ()),
                machine_ids=data.get("machine_ids", ()),
                expires_at=data.get("expires_at"),
                custom_msg=data.get("custom_msg", ""),
                justification=data["justification"],
                response=data.get("response", ""),
            )
        except RulesError as exc:
            # The justification is stored as the rule's comment: name the field sent.
            if exc.field == "comment":
                exc.field = "justification"
            raise
        return self._output(approval)

    @extend_schema(request=ApprovalDenySerializer, responses={200: ApprovalRequestSerializer})
    @action(detail=True, methods=["post"])
    def deny(self, request: Request, pk=None) -> Response:
        """Refuse a waiting request; `response` (required) is what the requester reads."""
        approval = self.get_object()
        payload = ApprovalDenySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        approval_request_deny(
            request=approval, actor=request.user, response=payload.validated_data["response"]
        )
        return self._output(approval)
