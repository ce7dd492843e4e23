from django.http import QueryDict, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from hosts.services import normalize_tag_name
from santaadmin.api import JSONErrorsNegotiation

from ..errors import InvalidImport
from ..filtersets import RuleFilterSet
from ..imports import MAX_IMPORT_BYTES, ImportProblem, export_response, parse_rules
from ..models import Rule
from ..services import (
    rule_create,
    rule_delete,
    rule_update,
    rules_bulk_create,
    rules_bulk_delete,
    rules_import,
)
from .parsers import CSVParser, SantactlJSONParser
from .serializers import (
    RuleBulkDeleteSerializer,
    RuleBulkSerializer,
    RuleDetailSerializer,
    RuleImportOptionsSerializer,
    RuleImportResultSerializer,
    RuleInputSerializer,
    RuleSerializer,
)

# The export's ?format= values and the rules.imports format each one is.
EXPORT_FORMATS = {"santactl": "json", "csv": "csv"}


class RuleViewSet(viewsets.ModelViewSet):
    """Rules. Writes go through rules.services; a delete reaches hosts as REMOVE."""

    serializer_class = RuleSerializer
    filterset_class = RuleFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = {"bulk_delete": ["rules.delete_rule"]}

    def get_queryset(self):
        return Rule.objects.select_related("created_by", "updated_by", "fanout").prefetch_related(
            "tags", "excluded_tags", "hosts"
        )

    def get_serializer_class(self):
        return RuleDetailSerializer if self.action == "retrieve" else RuleSerializer

    def _output(self, rule: Rule, code=status.HTTP_200_OK) -> Response:
        rule = self.get_queryset().get(pk=rule.pk)
        return Response(RuleDetailSerializer(rule).data, status=code)

    @extend_schema(request=RuleInputSerializer, responses={201: RuleDetailSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        payload = RuleInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        rule = rule_create(data=payload.to_input(), actor=request.user)
        return self._output(rule, status.HTTP_201_CREATED)

    @extend_schema(request=RuleInputSerializer, responses={200: RuleDetailSerializer})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        rule = self.get_object()
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
        merged = {**RuleInputSerializer.initial_from(rule), **request.data}
        payload = RuleInputSerializer(data=merged)
        payload.is_valid(raise_exception=True)
        rule = rule_update(rule=rule, data=payload.to_input(), actor=request.user)
        return self._output(rule)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        rule_delete(rule=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=inline_serializer("RuleBulk", {"rules": RuleInputSerializer(many=True)}),
        responses={
            201: inline_serializer(
                "RuleBulkResult",
                {"count": serializers.IntegerField(), "results": RuleSerializer(many=True)},
            )
        },
    )
    @action(detail=False, methods=["post"], url_path="bulk")
    def bulk(self, request: Request) -> Response:
        """Create many rules in one transaction: {"rules": [...]}; all or none."""
        envelope = RuleBulkSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        inputs = []
        for index, item in enumerate(envelope.validated_data["rules"]):
            payload = RuleInputSerializer(data=item)
            if not payload.is_valid():
                # Same shape as a domain error in a bulk request: fields plus the item's index.
                return Response(
                    {
                        "error": "invalid",
                        "detail": f"Item {index} is invalid.",
                        "fields": payload.errors,
                        "index": index,
                    },
                    status=status.HTTP_400_BAD_REQUEST,
                )
            inputs.append(payload.to_input())
        rules = rules_bulk_create(items=inputs, actor=request.user)
        created = self.get_queryset().filter(pk__in=[r.pk for r in rules]).order_by("pk")
        return Response(
            {"count": len(rules), "results": RuleSerializer(created, many=True).data},
            status=status.HTTP_201_CREATED,
        )

    # --- bulk delete, export, import -----------------------------------------------------------

    @extend_schema(
        request=RuleBulkDeleteSerializer,
        responses={
            200: inline_serializer(
                "RuleBulkDeleteResult",
                {
                    "count": serializers.IntegerField(),
                    "ids": serializers.ListField(child=serializers.IntegerField()),
                },
            )
        },
    )
    @action(detail=False, methods=["post"], url_path="bulk-delete")
    def bulk_delete(self, request: Request) -> Response:
        """Delete many rules in one transaction: {"ids": [...], "justification": "..."}; an id
        that names no rule refuses the whole request (400, naming it) and nothing is deleted.
        Hosts that held a deleted rule get REMOVE at their next sync."""
        payload = RuleBulkDeleteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        ids = sorted(set(payload.validated_data["ids"]))
        count = rules_bulk_delete(
            rule_ids=ids,
            actor=request.user,
            justification=payload.validated_data.get("justification", ""),
            require_all=True,
        )
        return Response({"count": count, "ids": ids})

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "format",
                str,
                enum=list(EXPORT_FORMATS),
                description="santactl (its JSON rule export, the default) or csv.",
            )
        ],
        filters=True,
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "text/csv"): OpenApiTypes.STR,
        },
    )
    @action(
        detail=False,
        methods=["get"],
        pagination_class=None,
        content_negotiation_class=JSONErrorsNegotiation,
    )
    def export(self, request: Request) -> StreamingHttpResponse:
        """The rules the list's filters select, as a file: santactl's JSON (`santactl rule
        --import` reads it) or CSV, streamed. Scope (tags, hosts) is not part of either
        format: export one scope at a time (?tag=, ?scope=everyone) and import it with the
        same scope."""
        file_format = request.query_params.get("format", "santactl")
        if file_format not in EXPORT_FORMATS:
            raise ValidationError({"format": [f"One of {', '.join(EXPORT_FORMATS)}."]})
        rules = self.filter_queryset(self.get_queryset()).order_by("pk")
        return export_response(rules, EXPORT_FORMATS[file_format])

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "tags", str, many=True, description="Scope: hosts with any of these tags."
            ),
            OpenApiParameter("machine_ids", str, many=True, description="Scope: these hosts."),
            OpenApiParameter(
                "justification",
                str,
                description="Kept in the audit trail, and as the comment of rules with none.",
            ),
            OpenApiParameter(
                "dry_run", bool, description="Check everything, create nothing (200)."
            ),
        ],
        request={
            "application/json": OpenApiTypes.OBJECT,
            "text/csv": OpenApiTypes.STR,
            "multipart/form-data": inline_serializer(
                "RuleImportUpload",
                {
                    "file": serializers.FileField(),
                    "format": serializers.ChoiceField(choices=["auto", "santactl", "csv"]),
                },
            ),
        },
        responses={201: RuleImportResultSerializer, 200: RuleImportResultSerializer},
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="import",
        url_name="import",
        parser_classes=[SantactlJSONParser, CSVParser, MultiPartParser],
        content_negotiation_class=JSONErrorsNegotiation,
    )
    def import_rules(self, request: Request) -> Response:
        """Create the rules of a santactl JSON rule export or a CSV file, all or none.

        The body is the file (Content-Type application/json or text/csv), or a multipart
        upload with a `file` field. Options go in the query string (or, for a multipart
        upload, as form fields): one scope for every rule (`tags` or `machine_ids`,
        repeatable; none: every host), `justification`, `dry_run`. A refused file is a 400
        naming the item (JSON, 1-based) or row (CSV, the header is row 1) and the field;
        nothing is created then."""
        options = _import_options(request)
        data, file_format, name = _import_body(request, options["format"])
        try:
            parsed = parse_rules(data, file_format, name)
        except ImportProblem as exc:
            raise InvalidImport(exc.detail, exc.field or "file") from None
        created = rules_import(
            rules=parsed.rules,
            tags=options.get("tags", ()),
            machine_ids=options.get("machine_ids", ()),
            justification=options.get("justification", ""),
            actor=request.user,
            dry_run=options["dry_run"],
        )
        scope = {
            "tags": sorted({normalize_tag_name(t) for t in options.get("tags", ())}),
            "machine_ids": sorted(set(options.get("machine_ids", ()))),
        }
        results = [
            {
                "id": rule.pk,
                **{name: getattr(rule, name) for name in IMPORT_ITEM_FIELDS},
                **scope,
            }
            for rule in created
        ]
        body = {
            "dry_run": options["dry_run"],
            "count": len(results),
            "results": results,
            "notes": parsed.notes,
        }
        code = status.HTTP_200_OK if options["dry_run"] else status.HTTP_201_CREATED
        return Response(body, status=code)


IMPORT_ITEM_FIELDS = (
    "rule_type",
    "identifier",
    "policy",
    "custom_msg",
    "custom_url",
    "cel_expr",
    "comment",
)
LIST_OPTIONS = ("tags", "machine_ids")


def _import_options(request: Request) -> dict:
    """The import's options from the query string and, for a multipart upload, its form
    fields; a key in both (or a single-valued key given twice) is refused."""
    sources = [request.query_params]
    if isinstance(request.data, QueryDict):
        sources.append(request.data)
    merged: dict = {}
    for source in sources:
        for key in source:
            if source is request.data and key == "file":
                continue
            if key in merged:
                raise ValidationError({key: ["Given twice (query string and form)."]})
            values = source.getlist(key)
            if key not in LIST_OPTIONS and len(values) > 1:
                raise ValidationError({key: ["Give it once."]})
            merged[key] = values if key in LIST_OPTIONS else values[0]
    payload = RuleImportOptionsSerializer(data=merged)
    payload.is_valid(raise_exception=True)
    return dict(payload.validated_data)


def _import_body(request: Request, upload_format: str) -> tuple[bytes, str, str]:
    """(file bytes, format for parse_rules, file name) from the request body or upload."""
    if isinstance(request.data, QueryDict):
        uploads = request.FILES.getlist("file")
        if len(uploads) != 1:
            raise ValidationError({"file": ["Upload one rules file in the field 'file'."]})
        upload = uploads[0]
        data = upload.read(MAX_IMPORT_BYTES + 1)
        file_format = {"santactl": "json", "csv": "csv"}.get(upload_format, "auto")
        name = upload.name or ""
    elif isinstance(request.data, bytes):
        if upload_format != "auto":
            raise ValidationError(
                {"format": ["Only for a multipart upload: the Content-Type gives the format."]}
            )
        data = request.data
        file_format = "csv" if request.content_type.startswith("text/csv") else "json"
        name = ""
    else:  # an empty body
        raise InvalidImport("The body is empty: send the rules file.", "file")
    if len(data) > MAX_IMPORT_BYTES:
        raise InvalidImport(
            f"The file is over {MAX_IMPORT_BYTES:,} bytes; split it into several imports.",
            "file",
        )
    return data, file_format, name
