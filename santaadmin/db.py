"""Database helpers for the sync path's hand-written statements."""

from __future__ import annotations

from django.conf import settings
from django.db import connection

TIMESTAMPTZ_OID = 1184
# psycopg's default: a statement run this many times on a connection is prepared.
PREPARE_THRESHOLD = 5


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
    from django.db.backends.postgresql.psycopg_any import register_tzloader
    from psycopg.pq import Format

    connection.validate_thread_sharing()
    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)
    # Django opens connections with prepare_threshold None (no preparation at all); only
    # server-binding cursors such as this one prepare, so Django's own queries are unaffected.
    connection.connection.prepare_threshold = PREPARE_THRESHOLD
    tzloader = connection.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    if connection.timezone != tzloader.timezone:
        register_tzloader(connection.timezone, raw)
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)
    return connection.make_cursor(raw)
