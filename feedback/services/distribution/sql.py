"""The hot path's SQL text: the pick (per assignment order and backend), SQLite's lease INSERT, PostgreSQL's
one-statement next, and submit's statements. Fixed texts are constants; the others are built once per shape
(lru_cache)."""

from __future__ import annotations

import functools
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from feedback.models import (
    Annotation,
    AssignmentOrder,
    Candidate,
    Item,
    ItemCandidate,
    Lease,
    Project,
    Prompt,
    Skip,
)
from feedback.services.distribution.raw import _field

T_ITEM = Item._meta.db_table
T_LEASE = Lease._meta.db_table
T_ANN = Annotation._meta.db_table
T_SKIP = Skip._meta.db_table
T_PROMPT = Prompt._meta.db_table
T_IC = ItemCandidate._meta.db_table
T_CAND = Candidate._meta.db_table
T_PROJECT = Project._meta.db_table


#: PostgreSQL: the item's candidates as JSON, read with the pick
_CANDIDATES_SQL_PG = (
    "(SELECT json_agg(json_build_object('id', c.id, 'text', c.text, 'finish_reason', c.finish_reason,"
    " 'model_version_id', c.model_version_id, 'position', ic.position) ORDER BY ic.position)"
    f" FROM {T_IC} ic JOIN {T_CAND} c ON c.id = ic.candidate_id WHERE ic.item_id = i.id)"
)
#: SQLite: the leased item's prompt and candidates, returned by the lease INSERT (_lease_next_sql_sqlite)
_LEASED_CONTENT_SQLITE = (
    f"(SELECT p.text FROM {T_ITEM} i JOIN {T_PROMPT} p ON p.id = i.prompt_id WHERE i.id = {T_LEASE}.item_id),"
    f" (SELECT p.messages FROM {T_ITEM} i JOIN {T_PROMPT} p ON p.id = i.prompt_id WHERE i.id = {T_LEASE}.item_id),"
    " (SELECT json_group_array(json_object('id', c.id, 'text', c.text, 'finish_reason', c.finish_reason,"
    " 'model_version_id', c.model_version_id, 'position', ic.position))"
    f" FROM {T_IC} ic JOIN {T_CAND} c ON c.id = ic.candidate_id WHERE ic.item_id = {T_LEASE}.item_id)"
)


#: the user's newest live lease in the project (its id), if any
_LIVE_SQL = (
    f"SELECT l.id FROM {T_LEASE} l JOIN {T_ITEM} i ON i.id = l.item_id"
    " WHERE l.annotator_id = %s AND i.project_id = %s AND l.expires_at > %s"
    " ORDER BY l.created_at DESC LIMIT 1"
)


#: assignment order -> (ORDER BY of the pick, the partial index that serves it); fewest annotations by default
_ORDERS: dict[str, tuple[str, str]] = {
    AssignmentOrder.PRIORITY: ("i.priority DESC, i.id", "item_open_priority"),
    AssignmentOrder.RANDOM: ("i.id", ""),
}
_FEWEST = ("i.annotations_count, i.id", "item_open_fewest")


def _order_by(order: str) -> str:
    return _ORDERS.get(order, _FEWEST)[0]


def _pick_conditions(order: str, exclude: int) -> str:
    """The pick's WHERE conditions after ``i.project_id = %s AND i.is_open``: the gold flag, room for one more
    (annotations + live leases), not annotated nor skipped by this annotator, the random order's pivot and the
    items to leave out."""
    random_pivot = (
        f" AND i.id >= (SELECT MIN(id) FROM {T_ITEM} WHERE project_id = %s) + %s * "
        f"((SELECT MAX(id) FROM {T_ITEM} WHERE project_id = %s) - (SELECT MIN(id) FROM {T_ITEM} WHERE project_id = %s))"
        if order == AssignmentOrder.RANDOM
        else ""
    )
    not_in = f" AND i.id NOT IN ({', '.join(['%s'] * exclude)})" if exclude else ""
    return (
        " AND i.is_gold = %s"
        f" AND i.annotations_count + (SELECT COUNT(*) FROM {T_LEASE} l"
        f"   WHERE l.item_id = i.id AND l.expires_at > %s) < i.annotations_required"
        f" AND NOT EXISTS (SELECT 1 FROM {T_ANN} a WHERE a.item_id = i.id AND a.annotator_id = %s)"
        f" AND NOT EXISTS (SELECT 1 FROM {T_SKIP} s WHERE s.item_id = i.id AND s.annotator_id = %s)"
        f"{random_pivot}{not_in}"
    )


def _from_open_items(order: str, *, sqlite: bool) -> str:
    # SQLite may ignore a partial index and walk finished items (DESIGN.md): name it explicitly.
    index = _ORDERS.get(order, _FEWEST)[1]
    indexed = f" INDEXED BY {index}" if index and sqlite else ""
    return f" FROM {T_ITEM} i{indexed}"


@functools.lru_cache(maxsize=256)
def _pick_sql(order: str, *, exclude: int) -> str:
    """PostgreSQL's pick: the first free item in the project's order, its row locked (SKIP LOCKED), with its
    prompt and candidates; ``exclude`` placeholders for items to leave out (filled since our snapshot)."""
    return (
        "SELECT i.id, i.prompt_id, i.annotations_count, i.annotations_required, i.is_gold, i.priority,"
        f" p.text, p.messages, {_CANDIDATES_SQL_PG}"
        f"{_from_open_items(order, sqlite=False)} JOIN {T_PROMPT} p ON p.id = i.prompt_id"
        f" WHERE i.project_id = %s AND i.is_open{_pick_conditions(order, exclude)}"
        f" ORDER BY {_order_by(order)} LIMIT 1 FOR UPDATE OF i SKIP LOCKED"
    )


@functools.lru_cache(maxsize=16)
def _lease_next_sql_sqlite(order: str, check_live: bool) -> str:
    """SQLite, one statement, run under the write lock: pick the first free item in the project's order by the
    latest commit and lease it, with the order shown drawn here (the item's candidates in random order). With
    ``check_live`` it leases nothing while the annotator holds a live lease in the project. Parameters: the
    annotator, now, the expiry, [the annotator, the project, now: with check_live], then the pick's
    (_pick_params). Returns the lease id, the item id, the order shown, the item's columns (prompt id,
    annotations count and required, gold, priority: a JSON array) and its content (_LEASED_CONTENT_SQLITE). An
    expired lease of the same annotator on the picked item (its row stays until reclaimed) is renewed in place."""
    no_live = f"NOT EXISTS ({_LIVE_SQL}) AND " if check_live else ""
    return (
        f"INSERT INTO {T_LEASE} (item_id, annotator_id, order_shown, created_at, expires_at)"
        f" SELECT i.id, %s, (SELECT json_group_array(candidate_id) FROM (SELECT candidate_id FROM {T_IC}"
        " WHERE item_id = i.id ORDER BY random())), %s, %s"
        f"{_from_open_items(order, sqlite=True)}"
        f" WHERE {no_live}i.project_id = %s AND i.is_open{_pick_conditions(order, 0)}"
        f" ORDER BY {_order_by(order)} LIMIT 1"
        " ON CONFLICT (item_id, annotator_id) DO UPDATE SET order_shown = excluded.order_shown,"
        " created_at = excluded.created_at, expires_at = excluded.expires_at"
        " RETURNING id, item_id, order_shown, (SELECT json_array(i.prompt_id, i.annotations_count,"
        f" i.annotations_required, i.is_gold, i.priority) FROM {T_ITEM} i WHERE i.id = {T_LEASE}.item_id),"
        f" {_LEASED_CONTENT_SQLITE}"
    )


_PICK_COLUMNS_PG = 9  # columns of PostgreSQL's pick row (_pick_sql)


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
