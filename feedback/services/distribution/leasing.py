"""Leasing the next item (item_next): the pick and the lease insert on each backend, and the leased objects
built from the rows that came back. PostgreSQL looks _pick_sql up in this module (a test replaces it here)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.utils import timezone

from feedback.db import hot_cursor
from feedback.models import AssignmentOrder, Candidate, Item, Lease, Project, Prompt
from feedback.services.distribution.locking import write_statement
from feedback.services.distribution.raw import _dt, _from_db, _is_pg, _loads
from feedback.services.distribution.sql import (
    _LIVE_SQL,
    _PICK_COLUMNS_PG,
    _lease_next_sql_sqlite,
    _next_sql_pg_around,
    _pick_sql,
)
from feedback.services.distribution.submit_context import _remember_for_submit

MAX_PICK_ATTEMPTS = 8  # PostgreSQL: picks per next when picked items were filled meanwhile


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
    JSON: PostgreSQL's pick row; on SQLite what the lease INSERT returned), without another query;
    ``candidates_shown`` in ``order_shown``."""
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


def _live_lease(lease_id: int, *, project: Project) -> Lease:
    """A reload: the same item, same order (two more statements, off the hot path)."""
    live = Lease.objects.select_related("item__prompt").get(pk=lease_id)
    live.item.project = project
    lease_candidates(lease=live)
    return live


def _next_sql_pg(order: str, exclude: int, check_live: bool) -> str:
    return _next_sql_pg_around(_pick_sql(order, exclude=exclude), check_live)


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
    """SQLite: pick and lease in one statement under the write lock (_lease_next_sql_sqlite), so the pick sees
    the latest commit and no other writer can take the item between the two. With ``check_live``, the
    statement leases nothing while the user holds a live lease in the project, and that lease comes back (a
    reload)."""
    expires_at = now + timedelta(seconds=project.lease_ttl_seconds)
    now_p, expires_p = _dt(now), _dt(expires_at)
    order = project.assignment_order
    wrap = False
    with connection.cursor() as cursor:
        while True:
            pivot = 0.0 if wrap else random.random()
            params = _pick_params(project=project, user=user, now_p=now_p, gold=gold, pivot=pivot, tried=[])
            live = [user.pk, project.pk, now_p] if check_live else []
            with write_statement():
                cursor.execute(
                    _lease_next_sql_sqlite(order, check_live), [user.pk, now_p, expires_p, *live, *params]
                )
                rows = cursor.fetchall()  # to the end: the statement commits when it completes
            if rows:
                lease_id, item_id, shown, item_json, *content = rows[0]
                prompt_id, count, required, is_gold, priority = _loads(item_json)
                return _build_lease(
                    lease_id=lease_id,
                    project=project,
                    user=user,
                    item_row=(item_id, prompt_id, count, required, is_gold, priority, *content),
                    order_shown=_loads(shown),
                    now=now,
                    expires_at=expires_at,
                )
            if check_live:
                check_live = False
                cursor.execute(_LIVE_SQL, [user.pk, project.pk, now_p])
                live_row = cursor.fetchone()
                if live_row is not None:
                    return _live_lease(live_row[0], project=project)
            if order == AssignmentOrder.RANDOM and not wrap:
                wrap = True  # nothing at or after the pivot: start again from the first item
                continue
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
