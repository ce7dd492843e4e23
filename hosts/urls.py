from django.urls import path

from . import views

app_name = "hosts"

urlpatterns = [
    path("hosts/", views.host_list, name="host_list"),
    path("hosts/<int:pk>/", views.host_detail, name="host_detail"),
    path("hosts/<int:pk>/tags/", views.host_tags, name="host_tags"),
    path("hosts/<int:pk>/mode/", views.host_mode, name="host_mode"),
    path("hosts/<int:pk>/clean-sync/", views.host_clean_sync, name="host_clean_sync"),
]
