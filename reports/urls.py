from django.urls import path

from . import views

app_name = "reports"

urlpatterns = [
    path("reports/", views.report_list, name="report_list"),
    path("reports/<int:pk>/status/", views.report_status, name="report_status"),
    path("reports/<int:pk>/download/", views.report_download, name="report_download"),
    path("reports/<str:kind>/download/", views.report_direct, name="report_direct"),
    path("reports/<str:kind>/generate/", views.report_generate, name="report_generate"),
]
