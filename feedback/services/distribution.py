"""Task distribution: lease the next item, submit, skip, undo.

Invariant (checked by the database where it can be, and by these statements where it cannot):
for every item, ``annotations_count + live leases <= annotations_required``.

How each backend makes racing ``next`` calls safe:
- SQLite: every transaction starts with BEGIN IMMEDIATE (config/settings/base.py), so writers are serialised
  from the first statement. The pick reads a window of free items outside any write transaction (WAL: it
  never waits for the writer); the lock is then held for one INSERT ... SELECT that re-checks each of them
  against the latest commit and leases the first with room. Holding the one write lock for the pick, as a
  first version did, capped throughput at the pick's speed (measured in benchmarks/annotate_load.py).
- PostgreSQL (READ COMMITTED): the pick locks the item row with ``FOR UPDATE SKIP LOCKED``; the lease is then
  inserted by ``arbiter_lease_insert`` (migration 0007), called by the same statement after the lock is
  taken, which re-counts live leases in a statement of its own. A VOLATILE function takes a fresh snapshot
  per statement, so it sees leases that another ``next`` committed just before we locked the row (the
  pick's snapshot may not). If the re-check inserts nothing, we pick again.
Submit turns a lease into an annotation under the same row lock (it updates the item row), so the sum
``annotations_count + live leases`` never grows.

SQL per call on the hot path (statements sent through Django's cursor; BEGIN is one on SQLite):
- next, SQLite: live-lease check and pick in one statement (a window of items, with their prompts and
  candidates) + insert (in autocommit under the file lock, see write_statement) = 2 (two more per re-read
  window).
- next, PostgreSQL: live-lease check, pick (item, prompt and candidates in one row), order shown and lease
  insert in one statement, in autocommit (SET LOCAL synchronous_commit = off rides on it) = 1 (one more per
  re-pick).
- submit, SQLite: BEGIN + delete lease (RETURNING order shown) + update item (RETURNING kind) + insert
  annotation + insert derived rows = 5 (6 with a demonstration).
- submit, PostgreSQL, in autocommit (no BEGIN/COMMIT round trips): read the live lease (what validation
  needs; skipped when this process served the next, see _SUBMIT_CONTEXT) + take it, count it on the item,
  insert the annotation and all derived rows in one statement (data-modifying CTEs, atomic on its own) = 1-2.
"""

from __future__ import annotations

import functools
import json
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import F
from django.db.models.base import ModelState
from django.utils import timezone

from feedback.db import hot_cursor
from feedback.errors import (
    AlreadyAnnotated,
    Conflict,
    IdempotencyKeyReused,
    InvalidInput,
    NoLiveLease,
    NotFound,
    UndoWindowPassed,
)
from feedback.models import (
    Annotation,
    AssignmentOrder,
    BinaryLabel,
    Candidate,
    Demonstration,
    Item,
    ItemCandidate,
    Lease,
    PreferencePair,
    Project,
    Prompt,
    Skip,
)
from feedback.services.payloads import validate_extras, validate_payload

MAX_PICK_ATTEMPTS = 8
PICK_WINDOW = 8  # SQLite: free items read per pick, outside the write lock

T_ITEM = Item._meta.db_table
T_LEASE = Lease._meta.db_table
T_ANN = Annotation._meta.db_table
T_SKIP = Skip._meta.db_table
T_PROMPT = Prompt._meta.db_table
T_IC = ItemCandidate._meta.db_table
T_CAND = Candidate._meta.db_table
T_PROJECT = Project._meta.db_table


try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

_process_lock = threading.Lock()
_lock_files: dict[str, int] = {}
_checkpointers: dict[str, int] = {}  # database path -> pid of the process whose thread checkpoints it
# Background PASSIVE checkpoints (they never block writers) every quarter second; the writer's own automatic
# checkpoint, which runs inside COMMIT under the write lock and syncs the files, then finds the work done.
# Measured on this machine over 2,000 commits (next + submit): commit time summed 1,964 ms with SQLite's
# defaults, 678 ms with these (median 0.06 ms either way; the tail is the checkpoint's fsync).
CHECKPOINT_EVERY_S = 0.25
AUTOCHECKPOINT_PAGES = 4000


def _checkpoint_loop(path: str) -> None:  # pragma: no cover - a daemon thread
    import sqlite3
    import time

    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    while True:
        time.sleep(CHECKPOINT_EVERY_S)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass


def _sqlite_tune(db: Any, path: str) -> None:
    """Checkpoint the WAL mostly in a background thread of this process rather than in whichever request
    commits the 1000th page: SQLite's automatic checkpoint runs inside COMMIT, under the write lock, and
    syncs the files (measured here with the defaults: commit median 0.06 ms, p99 24 ms, max 366 ms). The
    automatic checkpoint stays on (at 4000 pages) so the WAL stays bounded even if the thread falls behind.
    Called with _process_lock held."""
    import os

    if _checkpointers.get(path) != os.getpid():
        _checkpointers[path] = os.getpid()
        threading.Thread(target=_checkpoint_loop, args=(path,), daemon=True, name="sqlite-checkpoint").start()
    raw = db.connection
    if getattr(db, "_arbiter_tuned", None) is not raw:
        with db.cursor() as cursor:  # once per connection (counted like any statement)
            cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        db._arbiter_tuned = raw


# The functions below take the connection wrapper once (``connections[alias]``) rather than going through the
# ``connection`` proxy, which looks the wrapper up again on every attribute (~2.4 us each; it was ~30 lookups a
# next + submit cycle).


def _queues_on_file_lock(db: Any) -> bool:
    """Whether this write queues on the file lock: a SQLite file, outside any transaction of ours."""
    return not (db.vendor != "sqlite" or fcntl is None or db.in_atomic_block or db.is_in_memory_db())


@contextmanager
def _file_lock(db: Any) -> Iterator[None]:
    """Hold this process's lock, then an flock on a file beside the SQLite database (see write_transaction)."""
    path = str(db.settings_dict["NAME"])
    with _process_lock:
        fd = _lock_files.get(path)
        if fd is None:
            import os

            fd = _lock_files[path] = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
        db.ensure_connection()
        _sqlite_tune(db, path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def write_transaction() -> Iterator[None]:
    """``transaction.atomic()``; on a SQLite file, writers first queue on a lock (this process's, then an
    flock on a file beside the database) so that they wait in the kernel and wake at once, instead of
    polling in SQLite's busy handler, which sleeps 1, 2, 5, 10, ... ms between tries and ruins the tail
    latency when many requests write at the same time (SQLite allows one writer anyway); and the WAL is
    checkpointed in the background (see _sqlite_tune)."""
    db = connections[DEFAULT_DB_ALIAS]
    if not _queues_on_file_lock(db):
        with transaction.atomic():
            yield
        return
    with _file_lock(db), transaction.atomic():
        yield


@contextmanager
def write_statement() -> Iterator[None]:
    """For one writing statement: on a SQLite file it runs in autocommit (a single statement is its own
    transaction, and takes SQLite's write lock when it starts, as BEGIN IMMEDIATE would) while this process
    holds the file lock of write_transaction; that saves the BEGIN statement and the atomic block's work.
    Fetch every row the statement returns inside the block: SQLite commits when the statement completes.
    Elsewhere the same as write_transaction."""
    db = connections[DEFAULT_DB_ALIAS]
    if not _queues_on_file_lock(db) or not db.get_autocommit():
        with write_transaction():
            yield
        return
    with _file_lock(db):
        yield


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


def _submit_write_pg(
    values: dict[str, Any],
    children: list[tuple[type[Any], str, list[dict]]],
    *,
    lease: list[Any],
    cursor: Any,
) -> tuple[bool, int | None]:
    """PostgreSQL, one statement in autocommit: take the lease (``lease`` = item id, annotator id, now, and
    what the payload was validated against: the order shown, the task kind, allow_ties), count the annotation
    on the item, INSERT the annotation and its child rows (each pointing at it through `fk`). Returns (the
    lease was taken, the annotation's id or None when the item had no room left). Each value is adapted by
    its field and cast to its column's type; the text is built once per shape (the columns and row counts)."""
    db = connections[DEFAULT_DB_ALIAS]
    shape = tuple((model, fk, tuple(rows[0]) if rows else (), len(rows)) for model, fk, rows in children)
    sql = _submit_write_sql_pg(Annotation, tuple(values), shape)
    params: list[Any] = [*lease]
    params += [_field(Annotation, name).get_db_prep_save(values[name], db) for name in values]
    for model, _fk, rows in children:
        for row in rows:
            params += [_field(model, name).get_db_prep_save(row[name], db) for name in row]
    cursor.execute(sql, params)
    taken, annotation_id = cursor.fetchone()
    return bool(taken), annotation_id


@functools.lru_cache(maxsize=64)
def _submit_write_sql_pg(
    parent: type[Any], names: tuple[str, ...], shape: tuple[tuple[type[Any], str, tuple[str, ...], int], ...]
) -> str:
    """Data-modifying CTEs, in this order: d deletes the live lease (only with the order shown, task kind and
    ties setting that the payload was validated against), u counts the annotation on the item (only after d,
    and only with room: the row lock and its re-check serialise racing submits), a inserts the annotation
    (only after u), c<n> its derived rows. A second submit of the same lease finds nothing to delete and
    writes nothing. If the item has no room left (only when an admin lowered ``annotations_required`` below
    the leases held, after this submit's read, or after the next when the read was skipped) the lease is gone
    and nothing else is written: the item is full anyway."""
    db = connections[DEFAULT_DB_ALIAS]
    qn = db.ops.quote_name
    fields = [_field(parent, name) for name in names]
    sql = [
        f"WITH d AS (DELETE FROM {T_LEASE} l USING {T_ITEM} i, {T_PROJECT} pr"
        f" WHERE l.item_id = %s AND l.annotator_id = %s AND l.expires_at > %s AND l.order_shown = %s::jsonb"
        f" AND i.id = l.item_id AND pr.id = i.project_id AND pr.task_kind = %s AND pr.allow_ties = %s"
        f" RETURNING l.item_id),"
        f" u AS (UPDATE {T_ITEM} SET annotations_count = {T_ITEM}.annotations_count + 1,"
        f" is_open = ({T_ITEM}.annotations_count + 1 < {T_ITEM}.annotations_required) FROM d"
        f" WHERE {T_ITEM}.id = d.item_id AND {T_ITEM}.annotations_count < {T_ITEM}.annotations_required"
        f" RETURNING {T_ITEM}.id),"
        f" a AS (INSERT INTO {parent._meta.db_table} ({', '.join(qn(f.column) for f in fields)})"
        f" SELECT {', '.join(f'%s::{f.db_type(db)}' for f in fields)} FROM u RETURNING id)"
    ]
    for n, (model, fk, cnames, count) in enumerate(shape):
        if not count:
            continue
        cfields = [_field(model, name) for name in cnames]
        columns = ", ".join(qn(f.column) for f in [_field(model, fk), *cfields])
        select = "SELECT a.id, " + ", ".join(f"%s::{f.db_type(db)}" for f in cfields) + " FROM a"
        sql.append(
            f", c{n} AS (INSERT INTO {model._meta.db_table} ({columns}) {' UNION ALL '.join([select] * count)})"
        )
    sql.append(" SELECT (SELECT COUNT(*) FROM d), (SELECT id FROM a)")
    return "".join(sql)


#: PostgreSQL: the item's candidates as JSON, read with the pick
_CANDIDATES_SQL_PG = (
    "(SELECT json_agg(json_build_object('id', c.id, 'text', c.text, 'finish_reason', c.finish_reason,"
    " 'model_version_id', c.model_version_id, 'position', ic.position) ORDER BY ic.position)"
    f" FROM {T_IC} ic JOIN {T_CAND} c ON c.id = ic.candidate_id WHERE ic.item_id = i.id)"
)
#: SQLite reads a window of items per pick, but only the leased one's content is wanted: the pick reads each
#: item's candidate ids in position order ("12,13", to draw the order shown), and the lease INSERT returns the
#: leased item's prompt and candidates (_LEASED_CONTENT_SQLITE). Building the content of a window of eight
#: items cost 66 of the pick's 84 us here.
_CANDIDATE_IDS_SQLITE = (
    f"(SELECT group_concat(candidate_id) FROM (SELECT candidate_id FROM {T_IC}"
    " WHERE item_id = i.id ORDER BY position))"
)
_LEASED_CONTENT_SQLITE = (
    f"(SELECT p.text FROM {T_ITEM} i JOIN {T_PROMPT} p ON p.id = i.prompt_id WHERE i.id = {T_LEASE}.item_id),"
    f" (SELECT p.messages FROM {T_ITEM} i JOIN {T_PROMPT} p ON p.id = i.prompt_id WHERE i.id = {T_LEASE}.item_id),"
    " (SELECT json_group_array(json_object('id', c.id, 'text', c.text, 'finish_reason', c.finish_reason,"
    " 'model_version_id', c.model_version_id, 'position', ic.position))"
    f" FROM {T_IC} ic JOIN {T_CAND} c ON c.id = ic.candidate_id WHERE ic.item_id = {T_LEASE}.item_id)"
)


#: assignment order -> (ORDER BY of the pick, the partial index that serves it); fewest annotations by default
_ORDERS: dict[str, tuple[str, str]] = {
    AssignmentOrder.PRIORITY: ("i.priority DESC, i.id", "item_open_priority"),
    AssignmentOrder.RANDOM: ("i.id", ""),
}
_FEWEST = ("i.annotations_count, i.id", "item_open_fewest")


def _order_by(order: str) -> str:
    return _ORDERS.get(order, _FEWEST)[0]


def _pick_sql(order: str, *, exclude: int, limit: int = 1) -> str:
    return _pick_sql_for(order, exclude, limit, _is_pg())


@functools.lru_cache(maxsize=256)
def _pick_sql_for(order: str, exclude: int, limit: int, pg: bool) -> str:
    order_by, index = _ORDERS.get(order, _FEWEST)
    # SQLite may ignore a partial index and walk finished items (DESIGN.md): name it explicitly.
    indexed = f" INDEXED BY {index}" if index and not pg else ""
    random_pivot = (
        f" AND i.id >= (SELECT MIN(id) FROM {T_ITEM} WHERE project_id = %s) + %s * "
        f"((SELECT MAX(id) FROM {T_ITEM} WHERE project_id = %s) - (SELECT MIN(id) FROM {T_ITEM} WHERE project_id = %s))"
        if order == AssignmentOrder.RANDOM
        else ""
    )
    not_in = f" AND i.id NOT IN ({', '.join(['%s'] * exclude)})" if exclude else ""
    lock = " FOR UPDATE OF i SKIP LOCKED" if pg else ""
    # PostgreSQL: the item's content comes with the pick (one row); SQLite: its candidate ids (see above)
    content = f"p.text, p.messages, {_CANDIDATES_SQL_PG}" if pg else _CANDIDATE_IDS_SQLITE
    prompt = f" JOIN {T_PROMPT} p ON p.id = i.prompt_id" if pg else ""
    return (
        f"SELECT i.id, i.prompt_id, i.annotations_count, i.annotations_required, i.is_gold, i.priority,"
        f" {content}"
        f" FROM {T_ITEM} i{indexed}{prompt}"
        f" WHERE i.project_id = %s AND i.is_open AND i.is_gold = %s"
        f" AND i.annotations_count + (SELECT COUNT(*) FROM {T_LEASE} l"
        f"   WHERE l.item_id = i.id AND l.expires_at > %s) < i.annotations_required"
        f" AND NOT EXISTS (SELECT 1 FROM {T_ANN} a WHERE a.item_id = i.id AND a.annotator_id = %s)"
        f" AND NOT EXISTS (SELECT 1 FROM {T_SKIP} s WHERE s.item_id = i.id AND s.annotator_id = %s)"
        f"{random_pivot}{not_in}"
        f" ORDER BY {order_by} LIMIT {int(limit)}{lock}"
    )


@functools.lru_cache(maxsize=64)
def _insert_lease_among_sql(order: str, n: int) -> str:
    """SQLite, under the write lock: lease the first of ``n`` picked items (in the project's order, by the
    latest commit) that still has room for this annotator. The order shown was drawn beforehand per item.
    Returns the lease id, the item id and the item's content: prompt text, messages, candidates (JSON)."""
    ids = ", ".join(["%s"] * n)
    case = " ".join(["WHEN %s THEN %s"] * n)
    return (
        f"INSERT INTO {T_LEASE} (item_id, annotator_id, order_shown, created_at, expires_at)"
        f" SELECT i.id, %s, CASE i.id {case} END, %s, %s FROM {T_ITEM} i"
        f" WHERE i.id IN ({ids}) AND i.is_open AND i.is_gold = %s"
        f" AND i.annotations_count + (SELECT COUNT(*) FROM {T_LEASE} l"
        f"   WHERE l.item_id = i.id AND l.expires_at > %s) < i.annotations_required"
        f" AND NOT EXISTS (SELECT 1 FROM {T_ANN} a WHERE a.item_id = i.id AND a.annotator_id = %s)"
        f" AND NOT EXISTS (SELECT 1 FROM {T_SKIP} s WHERE s.item_id = i.id AND s.annotator_id = %s)"
        f" ORDER BY {_order_by(order)} LIMIT 1"
        f" ON CONFLICT (item_id, annotator_id) DO UPDATE SET order_shown = excluded.order_shown,"
        f" created_at = excluded.created_at, expires_at = excluded.expires_at"
        f" RETURNING id, item_id, {_LEASED_CONTENT_SQLITE}"
    )


def _build_lease(
    *,
    lease_id: int,
    project: Project,
    user: AbstractBaseUser,
    item_row: Sequence[Any],
    order_shown: list[int],
    now: datetime,
    expires_at: datetime,
) -> Lease:
    """The leased objects from the item's row (its six columns, the prompt's text and messages, the candidates as
    JSON: PostgreSQL's pick row; on SQLite the pick row's item columns and what the lease INSERT returned),
    without another query; ``candidates_shown`` in ``order_shown``."""
    item_id, prompt_id, count, required, is_gold, priority, p_text, p_messages = item_row[:8]
    project_id = project.pk
    prompt = _from_db(
        Prompt, {"id": prompt_id, "project_id": project_id, "text": p_text, "messages": _loads(p_messages)}
    )
    item = _from_db(
        Item,
        {
            "id": item_id,
            "project_id": project_id,
            "prompt_id": prompt_id,
            "annotations_count": count,
            "annotations_required": required,
            "is_gold": bool(is_gold),
            "priority": priority,
        },
        related={"project": project, "prompt": prompt},
    )
    lease = _from_db(
        Lease,
        {
            "id": lease_id,
            "item_id": item_id,
            "annotator_id": user.pk,
            "order_shown": order_shown,
            "created_at": now,
            "expires_at": expires_at,
        },
        related={"item": item, "annotator": user},
    )
    by_id = {c["id"]: c for c in _loads(item_row[8]) or []}
    lease.candidates_shown = _as_candidates(item_row, [by_id[c] for c in order_shown])  # type: ignore[attr-defined]
    return lease


def lease_candidates(*, lease: Lease) -> list[Candidate]:
    """The lease's candidates in the order shown (one query; already there on a lease from item_next)."""
    cached = getattr(lease, "candidates_shown", None)
    if cached is not None:
        return cached
    by_id = Candidate.objects.only("id", "text", "finish_reason", "model_version_id", "prompt_id").in_bulk(
        lease.order_shown
    )
    lease.candidates_shown = [by_id[c] for c in lease.order_shown if c in by_id]  # type: ignore[attr-defined]
    return lease.candidates_shown  # type: ignore[attr-defined]


def _pick_params(
    *, project: Project, user: AbstractBaseUser, now_p: Any, gold: bool, pivot: float, tried: list[int]
) -> list[Any]:
    params: list[Any] = [project.pk, gold, now_p, user.pk, user.pk]
    if project.assignment_order == AssignmentOrder.RANDOM:
        params += [project.pk, pivot, project.pk, project.pk]
    return params + tried


def _as_candidates(row: Sequence[Any], raw: list[dict[str, Any]]) -> list[Candidate]:
    return [
        _from_db(
            Candidate,
            {
                "id": c["id"],
                "prompt_id": row[1],
                "model_version_id": c["model_version_id"],
                "text": c["text"],
                "finish_reason": c["finish_reason"],
            },
        )
        for c in raw
    ]


#: the user's newest live lease in the project (its id), if any
_LIVE_SQL = (
    f"SELECT l.id FROM {T_LEASE} l JOIN {T_ITEM} i ON i.id = l.item_id"
    " WHERE l.annotator_id = %s AND i.project_id = %s AND l.expires_at > %s"
    " ORDER BY l.created_at DESC LIMIT 1"
)
_PICK_COLUMNS = 7  # columns of a pick row on SQLite (see _pick_sql_for)
_PICK_COLUMNS_PG = 9  # the same on PostgreSQL (one candidates column)


@functools.lru_cache(maxsize=16)
def _live_and_pick_sql(order: str, limit: int) -> str:
    """SQLite: the live-lease check and the first pick in one statement. Pick rows come with a last column of
    NULL; a live lease comes as one more row whose last column is its id (all others NULL)."""
    nulls = ", ".join(["NULL"] * _PICK_COLUMNS)
    return (
        f"SELECT * FROM (SELECT {nulls}, live.id FROM ({_LIVE_SQL}) live)"
        f" UNION ALL SELECT *, NULL FROM ({_pick_sql_for(order, 0, limit, False)})"
    )


def _live_lease(lease_id: int, *, project: Project) -> Lease:
    """A reload: the same item, same order (two more statements, off the hot path)."""
    live = Lease.objects.select_related("item__prompt").get(pk=lease_id)
    live.item.project = project
    lease_candidates(lease=live)
    return live


def _next_sql_pg(order: str, exclude: int, check_live: bool) -> str:
    return _next_sql_pg_around(_pick_sql(order, exclude=exclude), check_live)


@functools.lru_cache(maxsize=64)
def _next_sql_pg_around(pick: str, check_live: bool) -> str:
    """PostgreSQL, one statement in autocommit (one round trip): the user's live lease (with ``check_live``),
    the pick with its row lock (``FOR UPDATE SKIP LOCKED``), the order to show (shuffled here), and the lease
    insert by ``arbiter_lease_insert`` (migration 0007), which re-counts live leases in a fresh snapshot while
    the row lock is held; it runs only when there is no live lease. A lease is worth nothing after a crash (it
    would only expire), so this statement does not wait for the WAL flush (``set_config(..., true)`` is SET
    LOCAL for its own transaction); submits keep full durability. One row always comes back: the pick's
    columns (NULL when nothing is free), then the live lease id, the order shown and the new lease id."""
    live = f"SELECT ({_LIVE_SQL}) AS id" if check_live else "SELECT NULL::bigint AS id"
    return (
        f"WITH live AS MATERIALIZED ({live}),"
        f" picked AS MATERIALIZED ({pick}),"
        f" shown AS MATERIALIZED (SELECT picked.id, (SELECT jsonb_agg(ic.candidate_id ORDER BY random())"
        f" FROM {T_IC} ic WHERE ic.item_id = picked.id) AS ord FROM picked)"
        " SELECT picked.*, live.id, shown.ord, CASE WHEN live.id IS NULL AND shown.id IS NOT NULL THEN"
        " arbiter_lease_insert(shown.id, %s::integer, shown.ord, %s::timestamptz, %s::timestamptz) END,"
        " set_config('synchronous_commit', 'off', true)"
        " FROM live LEFT JOIN picked ON true LEFT JOIN shown ON true"
    )


def _lease_one_pg(
    *, project: Project, user: AbstractBaseUser, now: datetime, gold: bool, check_live: bool
) -> Lease | None:
    """PostgreSQL: lock one free item (SKIP LOCKED) and lease it in one statement (_next_sql_pg); pick again
    if it was filled meanwhile. With ``check_live``, the user's live lease in the project wins (a reload)."""
    expires_at = now + timedelta(seconds=project.lease_ttl_seconds)
    order = project.assignment_order
    tried: list[int] = []
    wrap = False
    with hot_cursor() as cursor:
        for _ in range(MAX_PICK_ATTEMPTS):
            pivot = 0.0 if wrap else random.random()
            params = _pick_params(project=project, user=user, now_p=now, gold=gold, pivot=pivot, tried=tried)
            live_params = [user.pk, project.pk, now] if check_live else []
            cursor.execute(
                _next_sql_pg(order, len(tried), check_live), [*live_params, *params, user.pk, now, expires_at]
            )
            row = cursor.fetchone()
            check_live = False
            live_id, shown, lease_id, _ = row[_PICK_COLUMNS_PG:]
            if live_id is not None:
                return _live_lease(live_id, project=project)
            if row[0] is None:
                if order == AssignmentOrder.RANDOM and not wrap:
                    wrap = True  # nothing at or after the pivot: start again from the first item
                    continue
                return None
            if lease_id is None:
                tried.append(row[0])  # another next() filled it between our snapshot and the lock: pick again
                continue
            order_shown = [int(c) for c in _loads(shown)]
            _remember_for_submit(
                user.pk, row[0], (order_shown, row[1], project.task_kind, project.allow_ties)
            )
            return _build_lease(
                lease_id=lease_id,
                project=project,
                user=user,
                item_row=row,
                order_shown=order_shown,
                now=now,
                expires_at=expires_at,
            )
    return None


def _lease_one_sqlite(
    *, project: Project, user: AbstractBaseUser, now: datetime, gold: bool, check_live: bool = False
) -> Lease | None:
    """SQLite: read a window of PICK_WINDOW free items (their candidate ids) *outside* the write lock (in WAL
    mode a reader never waits for the writer), then hold the lock for one statement only: the INSERT that
    leases the first of them that still has room by the latest commit. The lock is the bottleneck of every
    writer on SQLite, so the pick must not run under it. With ``check_live``, the first read also looks for
    the user's live lease in the project, which wins (a reload)."""
    expires_at = now + timedelta(seconds=project.lease_ttl_seconds)
    now_p, expires_p = _dt(now), _dt(expires_at)
    order = project.assignment_order
    tried: list[int] = []
    wrap = False
    with connection.cursor() as cursor:  # one cursor for the reads and the insert
        for _ in range(MAX_PICK_ATTEMPTS):
            pivot = 0.0 if wrap else random.random()
            params = _pick_params(
                project=project, user=user, now_p=now_p, gold=gold, pivot=pivot, tried=tried
            )
            if check_live:
                check_live = False
                cursor.execute(_live_and_pick_sql(order, PICK_WINDOW), [user.pk, project.pk, now_p, *params])
                rows = cursor.fetchall()
                if rows and rows[0][_PICK_COLUMNS] is not None:
                    return _live_lease(rows[0][_PICK_COLUMNS], project=project)
            else:
                cursor.execute(_pick_sql(order, exclude=len(tried), limit=PICK_WINDOW), params)
                rows = cursor.fetchall()
            if not rows:
                if order == AssignmentOrder.RANDOM and not wrap:
                    wrap = True  # nothing at or after the pivot: start again from the first item
                    continue
                return None
            shown: dict[int, list[str]] = {}  # item id -> its candidate ids in the order to show
            insert_params: list[Any] = [user.pk]
            for row in rows:
                ids = row[6].split(",") if row[6] else []
                random.shuffle(ids)
                shown[row[0]] = ids
                insert_params += [row[0], f"[{','.join(ids)}]"]
            insert_params += [now_p, expires_p, *shown, gold, now_p, user.pk, user.pk]
            with write_statement():
                cursor.execute(_insert_lease_among_sql(order, len(shown)), insert_params)
                rows_inserted = cursor.fetchall()  # to the end: the statement commits when it completes
            inserted = rows_inserted[0] if rows_inserted else None
            if inserted is not None:
                lease_id, item_id, *content = inserted
                row = next(row for row in rows if row[0] == item_id)
                order_shown = [int(c) for c in shown[item_id]]
                return _build_lease(
                    lease_id=lease_id,
                    project=project,
                    user=user,
                    item_row=(*row[:6], *content),
                    order_shown=order_shown,
                    now=now,
                    expires_at=expires_at,
                )
            tried += shown  # all of them were filled since our read: read the next window
        return None


def item_next(*, project: Project, user: AbstractBaseUser) -> Lease | None:
    """Lease one item of the project to the user for the project's TTL, or None when nothing is left.

    The user's newest live lease in this project comes back first (a reload shows the same item, same
    order; after an undo, the undone item).
    Never an item they annotated or skipped; never more live leases + annotations than the item needs.
    Gold items are served with probability ``project.gold_rate`` (and only then).
    The returned lease carries ``item`` (with ``prompt``) and ``candidates_shown`` in display order.
    """
    now = timezone.now()
    want_gold = project.gold_rate > 0 and random.random() < project.gold_rate
    golds = (True, False) if want_gold else (False,)
    if not _is_pg():
        # Reads in autocommit; _lease_one_sqlite takes the write lock for its insert alone. The live-lease
        # check rides on the first pick (one statement).
        for k, gold in enumerate(golds):
            lease = _lease_one_sqlite(project=project, user=user, now=now, gold=gold, check_live=k == 0)
            if lease is not None:
                return lease
        return None
    # PostgreSQL: one statement per pick (in autocommit, or in the caller's transaction).
    for k, gold in enumerate(golds):
        lease = _lease_one_pg(project=project, user=user, now=now, gold=gold, check_live=k == 0)
        if lease is not None:
            return lease
    return None


#: PostgreSQL, submit's read (autocommit): the live lease's order shown, what validation needs, and whether the
#: item still has room
_SUBMIT_READ_SQL_PG = (
    f"SELECT l.order_shown, i.prompt_id, pr.task_kind, pr.allow_ties,"
    f" i.annotations_count < i.annotations_required"
    f" FROM {T_LEASE} l JOIN {T_ITEM} i ON i.id = l.item_id JOIN {T_PROJECT} pr ON pr.id = i.project_id"
    f" WHERE l.item_id = %s AND l.annotator_id = %s AND l.expires_at > %s"
)


@functools.lru_cache(maxsize=1)
def _submit_sql() -> tuple[str, str]:
    delete = f"DELETE FROM {T_LEASE} WHERE item_id = %s AND annotator_id = %s AND expires_at > %s RETURNING order_shown"
    update = (
        f"UPDATE {T_ITEM} SET annotations_count = annotations_count + 1,"
        f" is_open = (annotations_count + 1 < annotations_required)"
        f" WHERE id = %s AND annotations_count < annotations_required"
        f" RETURNING prompt_id, project_id,"
        f" (SELECT task_kind FROM {T_PROJECT} pr WHERE pr.id = {T_ITEM}.project_id),"
        f" (SELECT allow_ties FROM {T_PROJECT} pr WHERE pr.id = {T_ITEM}.project_id)"
    )
    return delete, update


def _first_result(*, user: AbstractBaseUser, item_id: int, idempotency_key: str) -> Annotation:
    """After a submit found no live lease: the retry's first result, or the reason it cannot be accepted."""
    existing = Annotation.objects.filter(annotator=user, idempotency_key=idempotency_key).first()
    if existing is not None:
        if existing.item_id != item_id:
            raise IdempotencyKeyReused(
                f"idempotency key {idempotency_key!r} was already used for item {existing.item_id}; "
                "use a new key for each annotation",
                details={"item_id": existing.item_id},
            )
        return existing
    if Annotation.objects.filter(annotator=user, item_id=item_id).exists():
        raise AlreadyAnnotated(f"you already annotated item {item_id}")
    raise NoLiveLease(
        f"you hold no live lease on item {item_id}: it expired or was never yours; ask for the next item",
        details={"item_id": item_id},
    )


def annotation_submit(
    *,
    user: AbstractBaseUser,
    item_id: int,
    payload: dict[str, Any],
    idempotency_key: str,
    time_spent_ms: int = 0,
    comment: str = "",
    flags: Iterable[str] = (),
    demonstration: str = "",
) -> tuple[Annotation, bool]:
    """Turn the user's live lease on the item into an annotation and its derived rows, in one transaction.

    Returns (annotation, created). A retry with the same idempotency key returns the first annotation and
    created=False, writing nothing. Raises InvalidInput (400) for a payload that does not fit the task and
    NoLiveLease / AlreadyAnnotated / IdempotencyKeyReused (409) when the state does not allow it.
    """
    if isinstance(item_id, bool) or not isinstance(item_id, int):
        raise InvalidInput("item_id must be an integer", details={"field": "item_id"})
    key, time_spent_ms, comment, flag_list, demonstration = validate_extras(
        idempotency_key=idempotency_key,
        time_spent_ms=time_spent_ms,
        comment=comment,
        flags=flags,
        demonstration=demonstration,
    )
    now = timezone.now()
    extras = {"time_spent_ms": time_spent_ms, "comment": comment, "flags": flag_list, "idempotency_key": key}
    try:
        if _is_pg():
            return _submit_pg(
                user=user, item_id=item_id, payload=payload, extras=extras, demo=demonstration, now=now
            )
        return _submit_sqlite(
            user=user, item_id=item_id, payload=payload, extras=extras, demo=demonstration, now=now
        )
    except IntegrityError:
        # The (annotator, idempotency key) pair may be taken by an annotation of another item: report that.
        if not Annotation.objects.filter(annotator=user, idempotency_key=key).exists():
            raise
        return _first_result(user=user, item_id=item_id, idempotency_key=key), False


def _annotation_rows(
    *,
    item_id: int,
    user: AbstractBaseUser,
    kind: str,
    prompt_id: int,
    judgement: Any,
    order_shown: list[int],
    extras: dict[str, Any],
    demo: str,
    now: datetime,
) -> tuple[dict[str, Any], list[tuple[type[Any], str, list[dict[str, Any]]]]]:
    """The annotation's column values and its derived rows (pairs, binary labels, a demonstration)."""
    values = {
        "item": item_id,
        "annotator": user.pk,
        "kind": kind,
        "payload": judgement.payload,
        "order_shown": order_shown,
        **extras,
        "created_at": now,
    }
    pairs = [
        {
            "prompt": prompt_id,
            "chosen": p.chosen,
            "rejected": p.rejected,
            "is_tie": p.is_tie,
            "margin": p.margin,
            "created_at": now,
        }
        for p in judgement.pairs
    ]
    labels = [
        {"candidate": lb.candidate, "label": lb.label, "reasons": list(lb.reasons), "created_at": now}
        for lb in judgement.labels
    ]
    demos = [{"prompt": prompt_id, "text": demo, "created_at": now}] if demo else []
    return values, [
        (PreferencePair, "annotation", pairs),
        (BinaryLabel, "annotation", labels),
        (Demonstration, "annotation", demos),
    ]


def _built_annotation(annotation_id: int, values: dict[str, Any]) -> Annotation:
    return _from_db(
        Annotation, {"id": annotation_id, **{_field(Annotation, k).attname: v for k, v in values.items()}}
    )


def _item_full(item_id: int) -> Conflict:
    # only when an admin lowered annotations_required below the leases held
    return Conflict(f"item {item_id} already has all the annotations it needs", code="item_full")


#: PostgreSQL: (annotator id, item id) -> what submit validates against (order shown, prompt id, task kind,
#: allow_ties), remembered by the process that leased the item. A client on a keep-alive connection submits to
#: the process that served its next, which then skips submit's read (one round trip fewer). Never trusted: the
#: write takes the lease only if all of it still holds; otherwise submit reads the lease as usual.
_SUBMIT_CONTEXT: OrderedDict[tuple[int, int], tuple[list[int], int, str, bool]] = OrderedDict()
_SUBMIT_CONTEXT_MAX = 4096
_submit_context_lock = threading.Lock()


def _remember_for_submit(user_id: int, item_id: int, context: tuple[list[int], int, str, bool]) -> None:
    with _submit_context_lock:
        _SUBMIT_CONTEXT[(user_id, item_id)] = context
        if len(_SUBMIT_CONTEXT) > _SUBMIT_CONTEXT_MAX:
            _SUBMIT_CONTEXT.popitem(last=False)


def _recall_for_submit(user_id: int, item_id: int) -> tuple[list[int], int, str, bool] | None:
    with _submit_context_lock:
        return _SUBMIT_CONTEXT.pop((user_id, item_id), None)


def _submit_pg(
    *,
    user: AbstractBaseUser,
    item_id: int,
    payload: dict[str, Any],
    extras: dict[str, Any],
    demo: str,
    now: datetime,
) -> tuple[Annotation, bool]:
    """PostgreSQL, in autocommit (no BEGIN/COMMIT round trips): read the live lease (what the payload is
    validated against; skipped when this process leased the item, see _SUBMIT_CONTEXT), then take it and write
    everything in one statement (_submit_write_sql_pg), which is atomic on its own."""
    key = extras["idempotency_key"]
    db = connections[DEFAULT_DB_ALIAS]
    context = _recall_for_submit(user.pk, item_id)
    # Inside a caller's transaction, a savepoint: a failed write (a reused idempotency key) must not abort it.
    guard = transaction.atomic() if db.in_atomic_block else nullcontext()
    with guard, hot_cursor() as cursor:
        if context is None:
            cursor.execute(_SUBMIT_READ_SQL_PG, [item_id, user.pk, now])
            row = cursor.fetchone()
            if row is None:
                return _first_result(user=user, item_id=item_id, idempotency_key=key), False
            order_json, prompt_id, kind, allow_ties, has_room = row
            if not has_room:
                raise _item_full(item_id)
            context = ([int(c) for c in _loads(order_json)], prompt_id, kind, bool(allow_ties))
            remembered = False
        else:
            remembered = True
        order_shown, prompt_id, kind, allow_ties = context
        judgement = validate_payload(kind, payload, order_shown, allow_ties=allow_ties)
        values, children = _annotation_rows(
            item_id=item_id,
            user=user,
            kind=kind,
            prompt_id=prompt_id,
            judgement=judgement,
            order_shown=order_shown,
            extras=extras,
            demo=demo,
            now=now,
        )
        taken, annotation_id = _submit_write_pg(
            values,
            children,
            lease=[item_id, user.pk, now, _json_param(order_shown), kind, allow_ties],
            cursor=cursor,
        )
    if not taken:
        if remembered:  # what this process remembered no longer holds (or the lease is gone): read it
            return _submit_pg(user=user, item_id=item_id, payload=payload, extras=extras, demo=demo, now=now)
        # a retry of this submit took the lease first, or it expired meanwhile
        return _first_result(user=user, item_id=item_id, idempotency_key=key), False
    if annotation_id is None:
        raise _item_full(item_id)
    return _built_annotation(annotation_id, values), True


def _submit_sqlite(
    *,
    user: AbstractBaseUser,
    item_id: int,
    payload: dict[str, Any],
    extras: dict[str, Any],
    demo: str,
    now: datetime,
) -> tuple[Annotation, bool]:
    """SQLite, one transaction under the write lock: take the lease, count the annotation, validate, write."""
    delete_sql, update_sql = _submit_sql()
    with write_transaction(), hot_cursor() as cursor:  # one cursor for every statement of the submit
        cursor.execute(delete_sql, [item_id, user.pk, _dt(now)])
        row = cursor.fetchone()
        if row is None:
            return _first_result(user=user, item_id=item_id, idempotency_key=extras["idempotency_key"]), False
        order_shown = [int(c) for c in _loads(row[0])]
        cursor.execute(update_sql, [item_id])
        item_row = cursor.fetchone()
        if item_row is None:
            raise _item_full(item_id)
        prompt_id, _project_id, kind, allow_ties = item_row
        judgement = validate_payload(kind, payload, order_shown, allow_ties=bool(allow_ties))
        values, children = _annotation_rows(
            item_id=item_id,
            user=user,
            kind=kind,
            prompt_id=prompt_id,
            judgement=judgement,
            order_shown=order_shown,
            extras=extras,
            demo=demo,
            now=now,
        )
        (annotation_id,) = _insert(Annotation, [values], cursor=cursor)
        for model, fk, rows in children:
            if rows:
                _insert(model, [{fk: annotation_id, **r} for r in rows], cursor=cursor)
    return _built_annotation(annotation_id, values), True


def item_skip(*, user: AbstractBaseUser, item_id: int, reason: str) -> Skip:
    """Give back a leased item with a reason; the user is not offered it again. Idempotent."""
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise InvalidInput("say why you skip (reason)", details={"field": "reason"})
    if len(reason) > 500:
        raise InvalidInput("reason is at most 500 characters", details={"field": "reason"})
    now = timezone.now()
    with write_transaction():
        deleted, _ = Lease.objects.filter(item_id=item_id, annotator=user, expires_at__gt=now).delete()
        if not deleted:
            existing = Skip.objects.filter(item_id=item_id, annotator=user).first()
            if existing is not None:
                return existing
            raise NoLiveLease(f"you hold no live lease on item {item_id}", details={"item_id": item_id})
        return Skip.objects.create(item_id=item_id, annotator=user, reason=reason)


def annotation_undo(*, user: AbstractBaseUser, annotation_id: int) -> Lease:
    """Withdraw the user's own annotation within the project's undo window.

    Deletes the annotation and its derived rows, reopens the item, and gives the item back to the user as a
    fresh lease with the same order shown, so the next ``item_next`` returns it to be judged again (skipping
    it frees the slot for others).
    """
    with write_transaction():
        now = timezone.now()
        annotation = (
            Annotation.objects.select_related("item__project")
            .select_for_update(of=("self",))
            .filter(pk=annotation_id, annotator=user)
            .first()
        )
        if annotation is None:
            raise NotFound(f"you have no annotation {annotation_id}")
        project = annotation.item.project
        if annotation.created_at + timedelta(seconds=project.undo_window_seconds) < now:
            raise UndoWindowPassed(
                f"annotation {annotation_id} is older than this project's undo window "
                f"({project.undo_window_seconds} s)"
            )
        item_id = annotation.item_id
        order_shown = annotation.order_shown
        annotation.delete()  # cascades to its pairs, labels and demonstration
        Item.objects.filter(pk=item_id).update(annotations_count=F("annotations_count") - 1, is_open=True)
        lease, _ = Lease.objects.update_or_create(
            item_id=item_id,
            annotator=user,
            defaults={
                "order_shown": order_shown,
                "created_at": now,
                "expires_at": now + timedelta(seconds=project.lease_ttl_seconds),
            },
        )
        return lease


def leases_reclaim(*, now: datetime | None = None) -> int:
    """Delete expired leases (they already count for nothing; this keeps the table small). Returns how many."""
    deleted, _ = Lease.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
