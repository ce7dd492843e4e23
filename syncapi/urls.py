"""The agent's URLs: `SyncBaseURL` = https://<server>/sync/ (no trailing slashes, §1)."""

from django.urls import path

from .eventupload import eventupload
from .postflight import postflight
from .preflight import preflight
from .ruledownload import ruledownload

app_name = "syncapi"
urlpatterns = [
    path("preflight/<str:machine_id>", preflight, name="preflight"),
    path("eventupload/<str:machine_id>", eventupload, name="eventupload"),
    path("ruledownload/<str:machine_id>", ruledownload, name="ruledownload"),
    path("postflight/<str:machine_id>", postflight, name="postflight"),
]
