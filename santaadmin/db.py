"""Database helpers for the sync path's hand-written statements."""

from __future__ import annotations

import logging
import select
import weakref

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

logger = logging.getLogger("santaadmin.sync")

TIMESTAMPTZ_OID = 1184
# psycopg's default: a statement run this many times on a connection is prepared.
PREPARE_THRESHOLD = 5
# Raw connections already set up for preparing cursors (their tz loader checked).
_ready: weakref.WeakSet = weakref.WeakSet()


def prepared_cursor():
    """A cursor for the sync path's fixed statements. On PostgreSQL (with
    SYNC_PREPARED_STATEMENTS, the default) it binds parameters on the server and prepares each
    statement once per connection, so PostgreSQL no longer parses and plans it on every
    request — for the sync context that was two thirds of the statement's cost. Elsewhere, the
    usual cursor.

    Django's own cursors bind on the client and never prepare (it keeps prepared statements
    off for connection poolers in transaction mode; set SYNC_PREPARED_STATEMENTS=0 behind
    such a pooler unless it tracks prepared statements, as PgBouncer 1.21+ does with
    max_prepared_statements). The wrapper is Django's, so query logging and the tests'
    statement counts see these statements like any other.
    """
    if connection.vendor != "postgresql" or not settings.SYNC_PREPARED_STATEMENTS:
        return connection.cursor()
    import psycopg

    connection.validate_thread_sharing()
    connection.ensure_connection()
    raw_connection = connection.connection
    raw = psycopg.Cursor(raw_connection)
    if raw_connection not in _ready:
        # Django opens connections with prepare_threshold None (no preparation at all); only
        # server-binding cursors such as this one prepare, so Django's own queries are
        # unaffected.
        raw_connection.prepare_threshold = PREPARE_THRESHOLD
        _check_timezone(raw_connection)
        _ready.add(raw_connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)
    return connection.make_cursor(raw)


def _check_timezone(raw_connection) -> None:
    """Django sets the connection's time zone loader itself; a connection that disagrees
    (Django registers one on each of its cursors then) is not one this helper can use."""
    from psycopg.pq import Format

    loader = raw_connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    if connection.timezone != loader.timezone:
        from django.db.backends.postgresql.psycopg_any import register_tzloader

        register_tzloader(connection.timezone, raw_connection)


# --- many rows in one parameter -----------------------------------------------------------------


def json_rows(types: tuple[str, ...], rows: list[list]) -> tuple[str, list]:
    """A PostgreSQL row source for `rows` (one value per column, of the given SQL types) as a
    single JSON parameter: `SELECT (e->>0)::type0, … FROM json_array_elements(%s::json) e`.

    The statement's text is fixed whatever the number of rows (prepared and planned once), and
    the rows cross in one string serialised by orjson in C. The alternative, one array per
    column (`unnest(%s::text[], …)`), spent most of an event drain in psycopg's pure-Python
    array dumper. `jsonb` columns take the element as JSON (`e->i`); every other type parses
    the element's text (`e->>i`; JSON null is SQL NULL); datetimes must be aware (orjson
    writes their offset)."""
    import orjson

    columns = ", ".join(
        f"(e->{i})::jsonb" if kind == "jsonb" else f"(e->>{i})::{kind}"
        for i, kind in enumerate(types)
    )
    source = f"SELECT {columns} FROM json_array_elements(%s::json) AS e"  # noqa: S608
    return source, [orjson.dumps(rows).decode()]


def json_rows_type(field) -> str:
    """The type json_rows reads a model field's values as: `jsonb` for a JSONField (its value
    crosses as JSON), else the field's column type."""
    return "jsonb" if field.get_internal_type() == "JSONField" else field.db_type(connection)


def upsert(model, objs: list, *, unique_fields: list[str], update_fields: list[str]) -> None:
    """`model.objects.bulk_create(objs, update_conflicts=True, …)` in one statement of fixed
    text on PostgreSQL (rows as one JSON parameter, json_rows): Django's bulk_create prepared
    every value of every row in Python and built a statement as long as the batch, which cost
    more than running it. The rows are inserted in the order given (callers sort them, so
    concurrent upserts lock in the same order). Elsewhere, bulk_create."""
    if not objs:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_create(
            objs, update_conflicts=True, unique_fields=unique_fields, update_fields=update_fields
        )
        return
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not (f.primary_key and f.auto_created)]
    types = tuple(json_rows_type(f) for f in fields)
    rows = [[getattr(obj, f.attname) for f in fields] for obj in objs]
    source, params = json_rows(types, rows)
    quote = connection.ops.quote_name
    column = {f.name: f.column for f in fields}
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"{source} ON CONFLICT ({', '.join(quote(column[n]) for n in unique_fields)}) "
        "DO UPDATE SET "
        + ", ".join(f"{quote(column[n])} = EXCLUDED.{quote(column[n])}" for n in update_fields)
    )
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)


def drop_connection_closed_by_server() -> None:
    """Close this thread's idle persistent connection if the server has closed it, so the next
    statement opens a new one; then mark the request's health check as done. The sync path's
    replacement for Django's `SELECT 1` health check (CONN_HEALTH_CHECKS): one zero-timeout
    poll() of the socket instead of a round trip.

    Between requests nothing is in flight on an idle connection, so its socket has nothing to
    read unless the server hung up (a restart, a failover, a proxy or pooler dropping it: the
    server sends its FATAL notice and closes, and the socket reads EOF). Without this, the
    first request on each such connection after the database came back would fail with 503.
    A connection silently lost without a FIN (a network partition) is not seen here; that
    request fails with 503 and Django closes the connection after it.
    """
    conn = connections[DEFAULT_DB_ALIAS]  # the thread-local lookup once, not per attribute
    raw = conn.connection
    if raw is not None and conn.vendor == "postgresql" and not conn.in_atomic_block:
        try:
            fd = raw.pgconn.socket
        except Exception:  # psycopg.OperationalError: the connection is already known bad
            fd = None
        if fd is None or _readable(fd):
            logger.info("Dropping a database connection the server closed")
            conn.close()
    conn.health_check_done = True


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))
