"""Console pages (being built)."""

from django.http import Http404


def rule_list(request, *args, **kwargs):
    raise Http404


def rule_create(request, *args, **kwargs):
    raise Http404


def rule_import(request, *args, **kwargs):
    raise Http404


def rule_detail(request, *args, **kwargs):
    raise Http404


def rule_delivery_fragment(request, *args, **kwargs):
    raise Http404


def rule_edit(request, *args, **kwargs):
    raise Http404


def rule_delete(request, *args, **kwargs):
    raise Http404
