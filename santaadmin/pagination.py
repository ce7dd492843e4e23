"""API pagination: page numbers with a count on every list, except the audit trail's cursor.

A `page_size` that is not a positive whole number, a `page` that does not exist and a cursor
the server did not make are 4xx JSON errors, never a silent default or a 500.
"""

from django.conf import settings
from rest_framework import exceptions, pagination

PAGE_SIZE_MESSAGE = f"A positive whole number (at most {settings.API_MAX_PAGE_SIZE} is used)."


def _strict_page_size(paginator, request) -> int:
    raw = request.query_params.get(paginator.page_size_query_param)
    if raw is None:
        return paginator.page_size
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise exceptions.ValidationError({paginator.page_size_query_param: [PAGE_SIZE_MESSAGE]})
    return min(int(raw), paginator.max_page_size)


class PageNumberPagination(pagination.PageNumberPagination):
    """`?page=N&page_size=M` (M up to API_MAX_PAGE_SIZE); answers count, next, previous,
    results."""

    page_size_query_param = "page_size"
    max_page_size = settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request):
        return _strict_page_size(self, request)


class NewestFirstCursorPagination(pagination.CursorPagination):
    """`?cursor=...&page_size=M`, newest first by id; answers next, previous, results.

    For tables of millions of rows (the audit trail): each page is one index range scan from
    the cursor, with neither COUNT(*) nor OFFSET, so page 10,000 costs what page 1 does and a
    row inserted meanwhile never shifts a page. The price is that there is no total count and
    no jumping to page N: a client follows `next` (or narrows the list with filters)."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request):
        return _strict_page_size(self, request)

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise exceptions.ValidationError(
                {self.cursor_query_param: ["Not a cursor this server made; follow next/previous."]}
            ) from None
