"""The API's JSON parser. Its own module: DRF reads DEFAULT_PARSER_CLASSES while defining
APIView, so the class must import nothing that imports rest_framework.views."""

from rest_framework import exceptions
from rest_framework.parsers import JSONParser


def _has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


class StrictJSONParser(JSONParser):
    """JSON that is also valid Unicode. A JSON escape such as "\\ud800" (half of a surrogate
    pair) decodes to a string no UTF-8 encoder takes: echoed in a field error ("... is not a
    valid choice") it made rendering the 400 itself fail with a 500, and stored it would break
    every page that shows it. Refused here, once, for every endpoint."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
            surrogate = _has_lone_surrogate(data)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
        if surrogate:
            raise exceptions.ParseError(
                "JSON parse error - a string holds an unpaired surrogate escape (\\ud800-\\udfff);"
                " it is not valid Unicode."
            )
        return data
