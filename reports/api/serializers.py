from django.urls import reverse
from rest_framework import serializers

from santaadmin.api import StrictSerializer

from ..models import Report, ReportFormat, ReportKind, ReportState


class ReportSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.SerializerMethodField(
        help_text="Percent done; null while the number of rows is not known."
    )
    download_url = serializers.SerializerMethodField(help_text="Once the report is done.")

    class Meta:
        model = Report
        fields = [
            "id",
            "kind",
            "format",
            "parameters",
            "state",
            "rows_written",
            "rows_expected",
            "progress",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "error",
            "size",
            "sha256",
            "expires_at",
            "download_url",
        ]

    def get_progress(self, report: Report) -> int | None:
        return report.progress_percent

    def get_download_url(self, report: Report) -> str | None:
        if report.state != ReportState.DONE:
            return None
        return reverse("report-download", args=[report.pk])


class ReportCreateSerializer(StrictSerializer):
    """Ask for a report generated in the background."""

    kind = serializers.ChoiceField(choices=ReportKind.choices)
    format = serializers.ChoiceField(choices=ReportFormat.choices, default=ReportFormat.CSV)
    parameters = serializers.DictField(
        required=False,
        default=dict,
        help_text="The report's period and filters, by kind: see the export endpoint's "
        "query parameters (the same names and values, as JSON).",
    )
