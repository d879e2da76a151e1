"""config.backends.sqlite3: Django's SQLite backend with each statement's placeholder conversion cached."""

from __future__ import annotations

import pytest
from django.db import connection, connections
from django.db.backends.sqlite3.base import SQLiteCursorWrapper as DjangoCursor

from config.backends.sqlite3.base import SQLiteCursorWrapper, _to_qmark

QUERIES = [
    "SELECT 1",
    "SELECT * FROM t WHERE a = %s AND b IN (%s, %s)",
    "SELECT '%%' || x FROM t WHERE y LIKE %s",
    "SELECT x FROM t WHERE y = '100%%s' AND z = %s",
]


@pytest.mark.parametrize("query", QUERIES)
def test_conversion_is_djangos(query):
    ours = _to_qmark(query)
    assert ours == DjangoCursor.convert_query(None, query)  # type: ignore[arg-type]
    assert _to_qmark(query) is ours  # the second time from the cache


@pytest.mark.django_db
def test_the_configured_sqlite_database_uses_it():
    if connection.vendor != "sqlite":
        pytest.skip("this run's database is not SQLite")
    assert type(connections["default"]).__module__ == "config.backends.sqlite3.base"
    with connection.cursor() as cursor:
        assert isinstance(cursor.cursor, SQLiteCursorWrapper)
        cursor.execute("SELECT %s || '%%', %s", ["a", 2])
        assert cursor.fetchone() == ("a%", 2)
        cursor.execute("SELECT %(x)s + %(y)s", {"x": 1, "y": 2})  # the named style still goes to Django's
        assert cursor.fetchone() == (3,)
