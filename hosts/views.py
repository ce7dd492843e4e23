"""Console pages (being built)."""

from django.http import Http404


def host_list(request, *args, **kwargs):
    raise Http404


def host_detail(request, *args, **kwargs):
    raise Http404


def host_tags(request, *args, **kwargs):
    raise Http404


def host_mode(request, *args, **kwargs):
    raise Http404


def host_clean_sync(request, *args, **kwargs):
    raise Http404
