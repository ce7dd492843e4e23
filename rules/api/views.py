from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from ..filtersets import RuleFilterSet
from ..models import Rule
from ..services import rule_create, rule_delete, rule_update, rules_bulk_create
from .serializers import (
    RuleBulkSerializer,
    RuleDetailSerializer,
    RuleInputSerializer,
    RuleSerializer,
)


class RuleViewSet(viewsets.ModelViewSet):
    """Rules. Writes go through rules.services; a delete reaches hosts as REMOVE."""

    serializer_class = RuleSerializer
    filterset_class = RuleFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

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
