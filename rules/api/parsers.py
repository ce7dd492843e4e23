"""Parsers that hand an import the body as it was sent: rules.imports reads santactl's JSON
itself (duplicate keys, NaN and the like are errors there, which json.loads would accept)."""

from rest_framework.parsers import BaseParser

from ..imports import MAX_IMPORT_BYTES


class _RawParser(BaseParser):
    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        # One byte over the limit is enough to refuse the file without reading all of it.
        return stream.read(MAX_IMPORT_BYTES + 1) if stream is not None else b""


class SantactlJSONParser(_RawParser):
    media_type = "application/json"


class CSVParser(_RawParser):
    media_type = "text/csv"
