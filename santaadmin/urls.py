from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import APIRootView, DefaultRouter

from audit.api.views import AuditEntryViewSet
from events.api.views import (
    ApprovalRequestViewSet,
    BinaryViewSet,
    CertificateViewSet,
    EventViewSet,
)
from hosts.api.views import (
    EnrollmentViewSet,
    FanOutViewSet,
    HostViewSet,
    ProfileViewSet,
    TagRuleViewSet,
    TagViewSet,
)
from reports.api.views import ReportViewSet
from rules.api.views import RuleViewSet

from . import views
from .openapi import AnyRolePermission


class ApiRootView(APIRootView):
    """The router's index of endpoints, for holders of a role only (DRF's lets any signed-in
    user read it: it skips model permissions)."""

    permission_classes = [AnyRolePermission]


router = DefaultRouter()
router.APIRootView = ApiRootView
router.register("rules", RuleViewSet, basename="rule")
router.register("hosts", HostViewSet, basename="host")
router.register("events", EventViewSet, basename="event")
router.register("tag-rules", TagRuleViewSet, basename="tagrule")
router.register("fanouts", FanOutViewSet, basename="fanout")
router.register("profiles", ProfileViewSet, basename="configurationprofile")
router.register("tags", TagViewSet, basename="tag")
router.register("enrollments", EnrollmentViewSet, basename="enrollment")
router.register("binaries", BinaryViewSet, basename="binary")
router.register("certificates", CertificateViewSet, basename="certificate")
router.register("approval-requests", ApprovalRequestViewSet, basename="approvalrequest")
router.register("audit-entries", AuditEntryViewSet, basename="auditentry")
router.register("reports", ReportViewSet, basename="report")

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("events.urls")),
    path("", include("rules.urls")),
    path("", include("hosts.urls")),
    path("", include("audit.urls")),
    path("", include("reports.urls")),
    path("", include("accounts.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(router.urls)),
    # OpenAPI 3 (YAML, or JSON with ?format=json) and Swagger UI. The split view serves its
    # init script from the same URL with ?script (no inline script), assets from the sidecar.
    # Anonymous browsers are sent to sign in.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", views.SwaggerDocsView.as_view(url_name="schema"), name="api-docs"),
    # Answered by syncapi.middleware.SyncMiddleware; listed here for reverse().
    path("sync/", include("syncapi.urls")),
]

handler403 = "santaadmin.views.permission_denied"
handler404 = "santaadmin.views.not_found"
handler500 = "santaadmin.views.server_error"
