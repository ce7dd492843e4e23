from django.apps import AppConfig


class SyncapiConfig(AppConfig):
    name = "syncapi"
