"""A report's content, CSV or JSON, produced as it is read: bytes pieces of about 64 KiB.

CSV (UTF-8, no BOM): a header row of the column names, then one row per record. Lists are
joined with "; ", objects are compact JSON, true/false, empty for null; a cell starting with a
spreadsheet formula character gets a leading apostrophe (santaadmin.spreadsheet).

JSON: one document, written row by row::

    {"report": "executions", "generated_at": "...Z", "parameters": {...},
     "columns": [...], "rows": [
    {"execution_time": "...", ...},
    ...
    ]}

Each row is one line, so the rows can also be read line by line. Times everywhere are ISO 8601
in UTC with microseconds (`2026-01-31T12:00:00.000000Z`).
"""

from __future__ import annotations

import csv
import datetime
from collections.abc import Iterator

import orjson

from santaadmin.spreadsheet import csv_escape

from .kinds import Kind
from .params import iso

PIECE = 64 * 1024
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def _plain(value):
    """A value as JSON holds it: times as ISO 8601 UTC text, everything else as it is."""
    if isinstance(value, datetime.datetime):
        return iso(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime | datetime.date):
        return _plain(value)
    if isinstance(value, list | tuple):
        if all(isinstance(item, str | int) and not isinstance(item, bool) for item in value):
            return csv_escape("; ".join(str(item) for item in value))
        return csv_escape(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
    if isinstance(value, dict):
        return csv_escape(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
    if isinstance(value, str):
        return csv_escape(value)
    return str(value)


class _Line:
    """A file-like object whose write() returns what it was given (for csv.writer)."""

    def write(self, value: str) -> str:
        return value


class ReportStream:
    """The content of one report; iterate for bytes. `rows_written` counts the rows so far."""

    def __init__(
        self,
        kind: Kind,
        file_format: str,
        values: dict,
        *,
        parameters: dict,
        generated_at: datetime.datetime,
    ):
        self.kind, self.format, self.values = kind, file_format, values
        self.parameters, self.generated_at = parameters, generated_at
        self.columns = kind.columns(values)
        self.rows_written = 0

    def __iter__(self) -> Iterator[bytes]:
        return self._csv() if self.format == "csv" else self._json()

    def _rows(self):
        for row in self.kind.rows(self.values):
            self.rows_written += 1
            yield row

    def _csv(self) -> Iterator[bytes]:
        writer = csv.writer(_Line())
        pieces = [writer.writerow(self.columns)]
        size = len(pieces[0])
        for row in self._rows():
            line = writer.writerow([csv_cell(value) for value in row])
            pieces.append(line)
            size += len(line)
            if size >= PIECE:
                yield "".join(pieces).encode()
                pieces, size = [], 0
        if pieces:
            yield "".join(pieces).encode()

    def _json(self) -> Iterator[bytes]:
        columns = self.columns
        head = b"".join(
            (
                b'{"report":',
                orjson.dumps(self.kind.name),
                b',"generated_at":',
                orjson.dumps(iso(self.generated_at)),
                b',"parameters":',
                orjson.dumps(self.parameters, option=orjson.OPT_SORT_KEYS),
                b',"columns":',
                orjson.dumps(columns),
                b',"rows":[',
            )
        )
        pieces, size, separator = [head], len(head), b"\n"
        for row in self._rows():
            item = separator + orjson.dumps(
                dict(zip(columns, (_plain(value) for value in row), strict=True))
            )
            separator = b",\n"
            pieces.append(item)
            size += len(item)
            if size >= PIECE:
                yield b"".join(pieces)
                pieces, size = [], 0
        pieces.append(b"\n]}\n")
        yield b"".join(pieces)
