"""Request checks shared by the console and the API (the sync URLs have their own)."""

from django.http import HttpResponse, JsonResponse


class RejectNulMiddleware:
    """Answer 400 to a URL or query string holding a NUL character.

    PostgreSQL text cannot hold NUL, so such a value reaching a query would fail with a
    database error (a 500). Forms already refuse NUL in submitted fields; this covers paths
    and query parameters, which some pages read directly (filters, cursors, the request page).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()
        ):
            if request.path.startswith("/api/"):
                return JsonResponse(
                    {"error": "invalid_request", "detail": "NUL characters are not allowed."},
                    status=400,
                )
            return HttpResponse(
                "Bad request: NUL characters are not allowed.",
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        return self.get_response(request)
