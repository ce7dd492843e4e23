from rest_framework import viewsets

from ..filtersets import EventFilterSet
from ..models import Event
from .serializers import EventSerializer


class EventViewSet(viewsets.ReadOnlyModelViewSet):
    """Execution events as agents reported them; filter by machine, binary, decision, time."""

    serializer_class = EventSerializer
    filterset_class = EventFilterSet
    queryset = Event.objects.select_related("host").order_by("-execution_time", "-id")
