"""Console pages (being built)."""

from django.http import Http404


def entry_list(request, *args, **kwargs):
    raise Http404
