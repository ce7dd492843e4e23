from django.urls import path

from . import views

app_name = "events"

urlpatterns = [
    path("binaries/", views.binary_list, name="binary_list"),
    path("binaries/<str:sha256>/", views.binary_detail, name="binary_detail"),
    path("binaries/<str:sha256>/decide/", views.binary_decide, name="binary_decide"),
    path("requests/", views.request_list, name="request_list"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    # The page Santa's block dialog opens (event_detail_url): no console account needed.
    path("request/", views.request_public, name="request_public"),
]
