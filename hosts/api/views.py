from django.db.models import Count, Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from hosts.selectors import revision_current
from rules.delivery import host_rules

from ..filtersets import (
    EnrollmentFilterSet,
    FanOutFilterSet,
    HostFilterSet,
    ProfileFilterSet,
    TagFilterSet,
    TagRuleFilterSet,
)
from ..models import (
    MACHINE_ID_PATTERN,
    ConfigurationProfile,
    Enrollment,
    FanOut,
    Host,
    HostTag,
    Tag,
    TagRule,
)
from ..selectors import tags_with_host_counts
from ..services import (
    enrollment_create,
    enrollment_revoke,
    enrollment_update,
    host_request_clean_sync,
    host_set_mode_override,
    host_set_tags,
    profile_create,
    profile_delete,
    profile_update,
    tag_create,
    tag_delete,
    tag_rule_create,
    tag_rule_delete,
    tag_rule_update,
    tag_update,
)
from .serializers import (
    EnrollmentCreatedSerializer,
    EnrollmentInputSerializer,
    EnrollmentSerializer,
    EnrollmentUpdateSerializer,
    FanOutSerializer,
    HostDetailSerializer,
    HostSerializer,
    HostUpdateSerializer,
    ProfileInputSerializer,
    ProfileSerializer,
    TagDetailSerializer,
    TagInputSerializer,
    TagRuleInputSerializer,
    TagRuleSerializer,
    TagSerializer,
)


class HostViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Hosts, addressed by machine id. PATCH edits tags, the mode override and clean syncs."""

    lookup_field = "machine_id"
    lookup_value_regex = MACHINE_ID_PATTERN
    filterset_class = HostFilterSet
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return Host.objects.select_related("enrollment").prefetch_related(
            Prefetch(
                "tag_spans",
                queryset=HostTag.objects.filter(rev_to__isnull=True).select_related("tag"),
                to_attr="current_tag_spans",
            )
        )

    def get_serializer_class(self):
        return HostSerializer if self.action == "list" else HostDetailSerializer

    @extend_schema(request=HostUpdateSerializer, responses={200: HostDetailSerializer})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        host = self.get_object()
        payload = HostUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        if "tags" in data:
            host_set_tags(host=host, tag_names=data["tags"])
        if "client_mode_override" in data:
            host_set_mode_override(host=host, client_mode=data["client_mode_override"] or "")
        if "clean_sync_requested" in data:
            host_request_clean_sync(host=host, kind=data["clean_sync_requested"] or "")
        host = self.get_queryset().get(pk=host.pk)
        return Response(HostDetailSerializer(host).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("page", OpenApiTypes.INT, description="A page number."),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="Results per page."),
        ],
        responses={
            200: inline_serializer(
                "HostRuleList",
                {
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": inline_serializer(
                        "HostRule",
                        {
                            "rule_id": serializers.IntegerField(allow_null=True),
                            "rule_type": serializers.CharField(),
                            "identifier": serializers.CharField(),
                            "policy": serializers.CharField(),
                            "custom_msg": serializers.CharField(),
                            "custom_url": serializers.CharField(),
                            "cel_expr": serializers.CharField(),
                        },
                        many=True,
                    ),
                    "revision": serializers.IntegerField(
                        help_text="The fleet revision the set was computed at."
                    ),
                },
            )
        },
    )
    @action(detail=True, methods=["get"])
    def rules(self, request: Request, machine_id: str) -> Response:
        """The rules this host holds once it syncs: its effective set at the current revision."""
        host = self.get_object()
        revision = revision_current()
        held = host_rules(host.id, revision)
        page = self.paginate_queryset(held)
        data = [
            {
                "rule_id": rule.rule_id,
                "rule_type": rule.rule_type,
                "identifier": rule.identifier,
                "policy": rule.policy,
                "custom_msg": rule.custom_msg,
                "custom_url": rule.custom_url,
                "cel_expr": rule.cel_expr,
            }
            for rule in page
        ]
        response = self.get_paginated_response(data)
        response.data["revision"] = revision
        return response


class TagRuleViewSet(viewsets.ModelViewSet):
    """Automatic tags: a host whose reported fact satisfies the condition is in the tag.

    Changes are re-evaluated for the whole fleet by a worker (see `/api/v1/fanouts/`) and for
    each host at its next preflight."""

    serializer_class = TagRuleSerializer
    filterset_class = TagRuleFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return TagRule.objects.select_related("tag")

    @extend_schema(request=TagRuleInputSerializer, responses={201: TagRuleSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        payload = TagRuleInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        rule = tag_rule_create(
            tag_name=data["tag"],
            fact=data["fact"],
            operator=data["operator"],
            value=data["value"],
            description=data.get("description", ""),
        )
        return Response(TagRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TagRuleInputSerializer, responses={200: TagRuleSerializer})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        rule = self.get_object()
        payload = TagRuleInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        changes = dict(payload.validated_data)
        if "tag" in changes:
            changes["tag_name"] = changes.pop("tag")
        rule = tag_rule_update(rule=rule, **changes)
        return Response(TagRuleSerializer(rule).data)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        tag_rule_delete(rule=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class FanOutViewSet(viewsets.ReadOnlyModelViewSet):
    """Work queued for the Celery workers after rule and tag-rule changes, and its state."""

    serializer_class = FanOutSerializer
    filterset_class = FanOutFilterSet
    queryset = FanOut.objects.all()


class ProfileViewSet(viewsets.ModelViewSet):
    """Configuration profiles: the default one (every host), and profiles for tags and hosts.

    Precedence, later wins: default, the enrollment's mode, tag profiles (higher priority
    later), host profiles, the host's mode override. Changes apply at each host's next
    preflight; a host's detail shows its effective configuration and where each value came
    from."""

    serializer_class = ProfileSerializer
    filterset_class = ProfileFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return ConfigurationProfile.objects.prefetch_related("tags", "hosts")

    def _output(self, profile, code=status.HTTP_200_OK) -> Response:
        return Response(ProfileSerializer(self.get_queryset().get(pk=profile.pk)).data, status=code)

    @extend_schema(request=ProfileInputSerializer, responses={201: ProfileSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        payload = ProfileInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        tags, machine_ids = data.pop("tags", ()), data.pop("machine_ids", ())
        name = data.pop("name")
        profile = profile_create(name=name, values=data, tag_names=tags, machine_ids=machine_ids)
        return self._output(profile, status.HTTP_201_CREATED)

    @extend_schema(request=ProfileInputSerializer, responses={200: ProfileSerializer})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        profile = self.get_object()
        payload = ProfileInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        tags, machine_ids = data.pop("tags", None), data.pop("machine_ids", None)
        profile = profile_update(
            profile=profile, values=data, tag_names=tags, machine_ids=machine_ids
        )
        return self._output(profile)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        profile_delete(profile=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class TagViewSet(viewsets.ModelViewSet):
    """Tags: named groups of hosts that rules and profiles target, with their member counts.

    Renaming is safe (everything refers to a tag by id); a tag that anything uses or used
    cannot be deleted (409), since delivery history refers to it."""

    serializer_class = TagSerializer
    filterset_class = TagFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return tags_with_host_counts().order_by("name")

    def get_serializer_class(self):
        return TagSerializer if self.action == "list" else TagDetailSerializer

    def _output(self, tag: Tag, code=status.HTTP_200_OK) -> Response:
        return Response(TagDetailSerializer(self.get_queryset().get(pk=tag.pk)).data, status=code)

    @extend_schema(request=TagInputSerializer, responses={201: TagDetailSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        payload = TagInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        tag = tag_create(**payload.validated_data)
        return self._output(tag, status.HTTP_201_CREATED)

    @extend_schema(request=TagInputSerializer, responses={200: TagDetailSerializer})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        tag = self.get_object()
        payload = TagInputSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        tag = tag_update(tag=tag, **payload.validated_data)
        return self._output(tag)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        tag_delete(tag=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class EnrollmentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Enrollments: the secrets (or client-certificate issuers) that admit agents.

    Admin writes. The secret is in the creation response only; the hash is never shown.
    `tags` are given to hosts when they register (existing hosts keep theirs); `client_mode`
    is the enrollment's configuration layer and reaches its hosts at their next preflight."""

    serializer_class = EnrollmentSerializer
    filterset_class = EnrollmentFilterSet
    http_method_names = ["get", "post", "patch", "head", "options"]
    action_permissions = {"revoke": ["hosts.change_enrollment"]}

    def get_queryset(self):
        return (
            Enrollment.objects.prefetch_related("tags")
            .annotate(host_count=Count("hosts"))
            .order_by("name")
        )

    def _output(self, enrollment: Enrollment, code=status.HTTP_200_OK) -> Response:
        enrollment = self.get_queryset().get(pk=enrollment.pk)
        return Response(EnrollmentSerializer(enrollment).data, status=code)

    @extend_schema(request=EnrollmentInputSerializer, responses={201: EnrollmentCreatedSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Create an enrollment; the response holds its secret, once."""
        payload = EnrollmentInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        enrollment, secret = enrollment_create(
            name=data["name"],
            tag_names=data.get("tags", ()),
            client_mode=data.get("client_mode", ""),
            client_cert_issuer=data.get("client_cert_issuer", ""),
        )
        enrollment = self.get_queryset().get(pk=enrollment.pk)
        enrollment.secret = secret
        return Response(
            EnrollmentCreatedSerializer(enrollment).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=EnrollmentUpdateSerializer, responses={200: EnrollmentSerializer})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        enrollment = self.get_object()
        payload = EnrollmentUpdateSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        enrollment = enrollment_update(
            enrollment=enrollment,
            tag_names=data.get("tags"),
            client_mode=data.get("client_mode"),
            client_cert_issuer=data.get("client_cert_issuer"),
        )
        return self._output(enrollment)

    @extend_schema(request=None, responses={200: EnrollmentSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk=None) -> Response:
        """Revoke: agents presenting its secret or issuer are refused from the next request."""
        enrollment = enrollment_revoke(name=self.get_object().name)
        return self._output(enrollment)
