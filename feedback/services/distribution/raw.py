"""Rows read and written without the ORM's layers: values adapted as each field would, model instances built
from row values, INSERT ... RETURNING in one statement."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models.base import ModelState


def _is_pg() -> bool:
    return connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


def _dt(value: datetime) -> Any:
    """A datetime as the backend stores it (SQLite: text in UTC; PostgreSQL: timestamptz). An aware UTC datetime
    on SQLite (what timezone.now() gives) is written as the backend would, without its layers of calls."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor == "postgresql":
        return value
    if value.tzinfo is UTC and db.timezone is UTC:
        return str(value.replace(tzinfo=None))  # = adapt_datetimefield_value: made naive in UTC, then str()
    return db.ops.adapt_datetimefield_value(value)


def _json_param(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _from_db(model: type[Any], values: dict[str, Any], related: dict[str, Any] | None = None) -> Any:
    """A model instance from row values keyed by attname, as ``Model.from_db`` would build it (loaded from the
    default database; the fields not given are deferred), without running ``__init__``: it assigns every
    field through its descriptor (~3.5 us an instance; this ~0.4 us, six instances per next + submit). The
    hot path's models have no __init__ of their own and no pre/post_init receivers (a test checks that the
    two ways give equal instances). ``related`` primes the forward relations' cache (field name -> instance),
    as assigning ``obj.item = item`` would after its checks (the ids are already among the values)."""
    obj = model.__new__(model)
    state = obj._state = ModelState()
    state.adding = False
    state.db = DEFAULT_DB_ALIAS
    if related:
        state.fields_cache = related
    obj.__dict__.update(values)
    return obj


#: value types each kind of field passes to the database unchanged (get_db_prep_save returns them as they are)
_AS_IS: dict[str, type] = {
    **dict.fromkeys(
        (
            "AutoField",
            "BigAutoField",
            "IntegerField",
            "BigIntegerField",
            "SmallIntegerField",
            "PositiveIntegerField",
            "PositiveBigIntegerField",
            "PositiveSmallIntegerField",
        ),
        int,
    ),
    "CharField": str,
    "TextField": str,
    "BooleanField": bool,
    "FloatField": float,
}


def _prep_for(field: Any, vendor: str) -> Callable[[Any, Any], Any]:
    """``field.get_db_prep_save(value, db)``, with its layers of calls skipped where the result is known: values
    already of the column's Python type go as they are, JSON is dumped with the field's encoder and aware
    datetimes adapted by the backend: on SQLite, where that is all the ORM does. Anything else, and every value
    on other backends, takes the field's own path."""
    if field.is_relation:
        field = field.target_field
    general = field.get_db_prep_save
    if vendor != "sqlite":  # e.g. PostgreSQL wraps integers in psycopg's typed dumpers (server-side binding)
        return general
    internal = field.get_internal_type()
    as_is = _AS_IS.get(internal)
    if as_is is not None:
        return lambda value, db: value if type(value) is as_is else general(value, db)
    if internal == "JSONField":
        encoder = field.encoder
        return lambda value, db: (
            json.dumps(value, cls=encoder)
            if isinstance(value, list | dict | str | int)
            else general(value, db)
        )
    if internal == "DateTimeField":
        return lambda value, db: (
            db.ops.adapt_datetimefield_value(value)
            if isinstance(value, datetime) and value.tzinfo is not None
            else general(value, db)
        )
    return general


@functools.lru_cache(maxsize=256)
def _field(model: type[Any], name: str) -> Any:
    return model._meta.get_field(name)


@functools.lru_cache(maxsize=128)
def _insert_plan(
    model: type[Any], names: tuple[str, ...], n: int, returning: str, vendor: str
) -> tuple[str, list[Callable[[Any, Any], Any]]]:
    """The INSERT's SQL text and each column's adapter, built once per shape (model, columns, rows) and backend."""
    fields = [_field(model, name) for name in names]
    qn = connection.ops.quote_name
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {model._meta.db_table} ({', '.join(qn(f.column) for f in fields)})"
        f" VALUES {', '.join([one] * n)} RETURNING {qn(returning)}"
    )
    return sql, [_prep_for(f, vendor) for f in fields]


def _insert(model: type[Any], rows: list[dict[str, Any]], *, cursor: Any, returning: str = "id") -> list[Any]:
    """INSERT the rows in one statement (RETURNING one column) on the caller's ``cursor``: the hot path skips the
    ORM's query compiler. Values are adapted as each field would (JSON, datetimes, booleans: see _prep_for)."""
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: the `connection` proxy costs a lookup per use
    names = tuple(rows[0])
    sql, preps = _insert_plan(model, names, len(rows), returning, db.vendor)
    params = [prep(row[name], db) for row in rows for name, prep in zip(names, preps, strict=True)]
    cursor.execute(sql, params)
    return [r[0] for r in cursor.fetchall()]
