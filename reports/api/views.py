from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response

from santaadmin.openapi import ErrorSerializer
from santaadmin.permissions import RolePermission

from ..errors import InvalidParameters
from ..filtersets import ReportFilterSet
from ..kinds import KINDS
from ..models import Report, ReportFormat, ReportState
from ..params import BoolParam, IntParam, MultiChoiceParam, TimeParam, from_query
from ..responses import direct_response, stored_response
from ..services import report_create, report_record_direct, report_record_download
from .serializers import ReportCreateSerializer, ReportSerializer


class JsonOnlyNegotiation(DefaultContentNegotiation):
    """Answers are JSON (or a file the view streams itself): `?format=csv` names the report's
    format here, not one of DRF's renderers, so it must not select (or 404 on) a renderer."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ExportPermission(RolePermission):
    """Generating a report needs `add_report` besides `view_report`, also as a GET."""

    perms_map = {
        **RolePermission.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s", "%(app_label)s.add_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s", "%(app_label)s.add_%(model_name)s"],
    }


def _parameter_docs() -> list[OpenApiParameter]:
    """Every kind's parameters as query parameters (each says which kinds take it)."""
    seen: dict[str, tuple] = {}
    for kind in KINDS.values():
        for name, field in kind.parameters().fields.items():
            kinds = seen.get(name, (field, []))[1]
            seen[name] = (field, [*kinds, kind.name])
    docs = [
        OpenApiParameter(
            "format", OpenApiTypes.STR, enum=ReportFormat.values, description="Default csv."
        )
    ]
    for name, (field, kinds) in seen.items():
        kind_type = OpenApiTypes.STR
        if isinstance(field, BoolParam):
            kind_type = OpenApiTypes.BOOL
        elif isinstance(field, IntParam):
            kind_type = OpenApiTypes.INT
        elif isinstance(field, TimeParam):
            kind_type = OpenApiTypes.DATETIME
        choices = list(getattr(field, "choices", {}) or {}) or None
        text = str(field.label or name)
        if field.help_text:
            text += f": {str(field.help_text).rstrip('.')}"
        text += f". Reports: {', '.join(kinds)}."
        docs.append(
            OpenApiParameter(
                name,
                kind_type,
                enum=choices,
                many=isinstance(field, MultiChoiceParam),
                description=text,
            )
        )
    return docs


def _invalid(exc: InvalidParameters, prefix: str = "") -> ValidationError:
    return ValidationError({f"{prefix}{name}": messages for name, messages in exc.fields.items()})


class ReportViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Reports for auditors. Small and medium ones stream directly from
    `GET /api/v1/reports/<kind>/export/`; large ones are generated in the background
    (`POST`), followed here (`state`, `progress`) and downloaded when done. Kinds: rules
    (inventory with provenance and delivery), executions (blocked and would-be-blocked, or
    grouped), hosts (compliance), audit (the audit log with its hash chain)."""

    serializer_class = ReportSerializer
    queryset = Report.objects.select_related("created_by").order_by("-created_at", "-id")
    lookup_value_regex = r"[0-9]+"
    filterset_class = ReportFilterSet
    content_negotiation_class = JsonOnlyNegotiation

    def get_permissions(self):
        if self.action == "export":
            return [ExportPermission()]
        return super().get_permissions()

    @extend_schema(request=ReportCreateSerializer, responses={202: ReportSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Ask for a report generated in the background: 202, and the report to follow."""
        payload = ReportCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            report = report_create(
                kind=data["kind"],
                file_format=data["format"],
                parameters=data["parameters"],
                actor=request.user,
            )
        except InvalidParameters as exc:
            raise _invalid(exc, "parameters.") from None
        report.refresh_from_db()
        return Response(ReportSerializer(report).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, "application/json"): OpenApiTypes.BINARY,
            409: OpenApiResponse(ErrorSerializer, description="Not done (yet, or it failed)."),
        }
    )
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk=None):
        """The report's content once it is done (409 before, or when it failed)."""
        report = self.get_object()
        if report.state != ReportState.DONE:
            detail = (
                f"The report failed: {report.error}"
                if report.state == ReportState.FAILED
                else f"The report is {report.state} ({report.rows_written} rows so far)."
            )
            return Response(
                {"error": "report_not_ready", "detail": detail}, status=status.HTTP_409_CONFLICT
            )
        report_record_download(report=report, actor=request.user)
        return stored_response(report)

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(KINDS)),
            *_parameter_docs(),
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, "application/json"): OpenApiTypes.BINARY,
            400: OpenApiResponse(ErrorSerializer, description="Invalid parameters."),
        },
    )
    @action(detail=False, methods=["get"], url_path=r"(?P<kind>[a-z]+)/export")
    def export(self, request: Request, kind: str):
        """A report streamed as it is read (constant memory, any size): CSV or JSON."""
        if kind not in KINDS:
            raise NotFound(f"No report {kind!r}; reports: {', '.join(KINDS)}.")
        query = request.query_params.copy()
        file_format = query.pop("format", ["csv"])[-1]
        try:
            parameters = from_query(KINDS[kind].parameters, query, strict=True)
            parameters = report_record_direct(
                kind=kind, file_format=file_format, parameters=parameters, actor=request.user
            )
        except InvalidParameters as exc:
            raise _invalid(exc) from None
        return direct_response(kind, file_format, parameters)
