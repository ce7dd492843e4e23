from rest_framework import viewsets

from santaadmin.pagination import NewestFirstCursorPagination

from ..filtersets import AuditEntryFilterSet
from ..models import AuditEntry
from .serializers import AuditEntrySerializer


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail, newest first: who changed what, when, from where and why.

    Read-only for every role. Cursor-paginated (`next`/`previous`, no `count`): the trail
    grows by millions of rows, and a count or an offset would scan them on every page."""

    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilterSet
    pagination_class = NewestFirstCursorPagination
    queryset = AuditEntry.objects.all()
