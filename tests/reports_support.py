"""Helpers of the report tests: reading a report back, running jobs where they are sent, and
inserting many events fast."""

# The loader writes its SQL from integers and constants of this file: S608 is noise here.
# ruff: noqa: S608

from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import connection

from reports import jobs


@pytest.fixture
def jobs_inline(monkeypatch):
    """Report jobs run where they are sent (the test's transaction), not in a thread."""
    monkeypatch.setattr(jobs, "IN_PROCESS_THREAD", False)


def body_of(response) -> bytes:
    assert response.streaming, "reports are streamed"
    return b"".join(response.streaming_content)


def csv_rows(content: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))


def json_doc(content: bytes) -> dict:
    return json.loads(content)


def export(api, kind: str, file_format: str = "csv", **params):
    """GET /api/v1/reports/<kind>/export/ -> (response, rows as dicts)."""
    response = api.get(f"/api/v1/reports/{kind}/export/", {"format": file_format, **params})
    assert response.status_code == 200, response.content
    content = body_of(response)
    rows = csv_rows(content) if file_format == "csv" else json_doc(content)["rows"]
    return response, rows


def export_bytes(api, kind: str, file_format: str = "csv", **params) -> bytes:
    response = api.get(f"/api/v1/reports/{kind}/export/", {"format": file_format, **params})
    assert response.status_code == 200, response.content
    return body_of(response)


def insert_events(*, host_id: int, binary_id: str, first: int, count: int) -> None:
    """`count` BLOCK_BINARY events numbered first.. first+count-1, one second apart from
    2026-01-01, with one set-based INSERT ... SELECT (as the console benchmark loads)."""
    from events.models import Event

    last = first + count - 1
    if connection.vendor == "postgresql":
        source = f"generate_series({first}, {last}) AS s(g)"
        when = "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'"
    else:
        source = (
            f"(WITH RECURSIVE n(g) AS (SELECT {first} UNION ALL SELECT g + 1 FROM n "
            f"WHERE g < {last}) SELECT g FROM n) s"
        )
        when = "strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || g || ' seconds')"
    values = {
        "host_id": str(int(host_id)),
        "dedupe_key": "'mem-' || g",
        "binary_id": f"'{binary_id}'",
        "decision": "'BLOCK_BINARY'",
        "execution_time": when,
        "received_at": when,
        "file_name": "'tool-' || g",
        "file_path": "'/usr/local/bin'",
        "executing_user": "'user' || (g % 50)",
        "pid": "g",
    }
    columns, select, params = [], [], []
    for field in Event._meta.concrete_fields:
        if field.attname in values:
            select.append(values[field.attname].replace("%", "%%"))
        elif field.primary_key:
            continue
        else:
            select.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
        columns.append(connection.ops.quote_name(field.column))
    sql = (
        f"INSERT INTO {connection.ops.quote_name(Event._meta.db_table)} ({', '.join(columns)}) "
        f"SELECT {', '.join(select)} FROM {source}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
