"""One JSON error shape for the whole API: {"error": code, "detail": text, "fields": {...}}."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from events.approvals import ApprovalError
from events.services import InvalidEvent
from hosts.errors import HostsError
from rules.errors import RulesError


def exception_handler(exc, context):
    if isinstance(exc, RulesError | HostsError | InvalidEvent | ApprovalError):
        body = {"error": exc.code, "detail": exc.detail}
        field = getattr(exc, "field", None)
        index = getattr(exc, "index", None)
        if field:
            body["fields"] = {field: [exc.detail]}
        if index is not None:
            body["index"] = index
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = {"error": "invalid", "detail": "Invalid input.", "fields": fields}
    elif isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        response.data = {"error": code, "detail": str(exc.detail)}
    if response.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        response.data["error"] = "method_not_allowed"
    return response


class StrictCharField(serializers.CharField):
    """A string field that refuses numbers and booleans instead of converting them."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """An input serializer that refuses keys it does not know: a typo such as "tag" for
    "tags" must be an error, not a rule for every host."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise exceptions.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true or false (or null where allowed), not "yes", 1 or "on"."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, not "7", 7.0 or true."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class JSONErrorsNegotiation(BaseContentNegotiation):
    """For views that answer with a file of their own (StreamingHttpResponse) and take a
    `format` query parameter of their own: DRF would read ?format= as a renderer name and
    answer 404. Errors are rendered as the API's JSON; parsers by the Content-Type."""

    def select_parser(self, request, parsers):
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        renderer = renderers[0]
        return renderer, renderer.media_type
