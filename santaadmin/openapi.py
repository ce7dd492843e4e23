"""The OpenAPI schema (/api/schema/) and its Swagger UI (/api/docs/), by drf-spectacular.

Both are for any signed-in user or token holder with a role (any `view_` permission on the
domain apps). Anonymous requests for the schema get the API's usual 401 JSON; an anonymous
browser opening the docs is sent to the sign-in page (santaadmin.views.SwaggerDocsView).
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import BasePermission

from .roles import has_any_role


class AnyRolePermission(BasePermission):
    """An authenticated user allowed to read something of the API (any role)."""

    def has_permission(self, request, view) -> bool:
        return has_any_role(request.user)


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """accounts.ApiToken keys in the schema's security schemes."""

    target_class = "accounts.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>` (or `Bearer <key>`): an API token from "
            "/account/tokens/ or `manage.py apitoken create`.",
        }


class ErrorSerializer(serializers.Serializer):
    """The API's one error shape (santaadmin.api.exception_handler)."""

    error = serializers.CharField(help_text='A machine-readable code, e.g. "invalid".')
    detail = serializers.CharField(help_text="A human-readable explanation.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Messages per refused input field.",
    )
    index = serializers.IntegerField(
        required=False, help_text="In a bulk request, the position of the refused item."
    )


_ERRORS = {
    "400": "Invalid input.",
    "401": "Not authenticated.",
    "403": "Not allowed for this role.",
    "404": "Not found.",
    "409": "Conflicts with the current state (e.g. a duplicate).",
    "429": "Too many requests: see the Retry-After header (seconds).",
}


class ErrorAutoSchema(AutoSchema):
    """drf-spectacular's schema, plus the error responses every operation may answer."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        method = self.method.upper()
        codes = ["401", "403", "429"]
        if method in ("POST", "PUT", "PATCH"):
            codes += ["400", "409"]
        if self._is_detail_view() or method in ("PATCH", "DELETE"):
            codes.append("404")
        for code in codes:
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(ErrorSerializer, description=_ERRORS[code]), code
                )
        return responses

    def _is_detail_view(self) -> bool:
        return "{" in self.path
