"""The cursor of the per-request hot path (the membership check, next, submit).

On PostgreSQL every statement sent through Django's default cursor is bound on the client: the server parses
and plans it afresh each time. For the handful of fixed statements that run on every next/submit request that
planning is a large share of the server's work (EXPLAIN ANALYZE on a 50,000-item project: 1.2 ms of planning
against 0.9 ms of execution per next + submit cycle, the pick alone 0.46 ms to plan), so :func:`hot_cursor`
binds their parameters on the server instead, and psycopg prepares each of them after its
``prepare_threshold``-th run on a connection (config/settings/base.py; ``DB_PREPARED_STATEMENTS=0`` turns it
off, for a pooler in transaction mode that cannot keep prepared statements). Measured in process, alternating
runs of 1,500 cycles: the server's CPU per cycle was 2.1-3.3 ms against 3.5-4.2 ms without, and in a
second set 2.8-3.8 ms against 4.1-5.4 ms (about -28 %). The ORM
keeps Django's client-side binding, so its queries (large ``IN`` lists included) are unchanged.

Statements run through Django's cursor wrapper either way: they are counted (X-SQL-Statements), logged and
wrapped in Django's database errors like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections


@contextmanager
def hot_cursor(using: str = DEFAULT_DB_ALIAS) -> Iterator[Any]:
    """A cursor for fixed, frequently run statements: prepared on the server where that is on (PostgreSQL
    with a ``prepare_threshold``), Django's usual cursor everywhere else. Write ``%s`` placeholders as usual."""
    db = connections[using]
    if db.vendor == "postgresql":
        db.close_if_health_check_failed()
        db.ensure_connection()
    if db.vendor != "postgresql" or db.connection.prepare_threshold is None:
        with db.cursor() as cursor:
            yield cursor
        return
    from django.db.backends.postgresql.base import ServerBindingCursor

    with db.wrap_database_errors:
        # What BaseDatabaseWrapper.cursor() does, with the server-binding cursor class instead of the default.
        cursor = db._prepare_cursor(ServerBindingCursor(db.connection))
    with cursor:
        yield cursor
