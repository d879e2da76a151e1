"""Many annotators in separate processes hammer next/submit against one database (SQLite file in WAL mode with
BEGIN IMMEDIATE, or PostgreSQL): afterwards no item has more annotations than required, no accepted
annotation is lost, counters match rows, and a monitor polling during the run never saw live leases +
annotations exceed what an item needs.

Workers are forked from the test process (Django already loaded): each opens its own connection. Some
abandon a lease until it expires (TTL 1 s) and submit late (409), some retry a submit with the same key, some
skip."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

from feedback.errors import NoLiveLease

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 8
ITEMS = 30
REQUIRED = 3
DEADLINE_S = 40.0


def _use_db(sqlite_file: str | None) -> None:
    """In a forked child: forget the parent's connection and open our own (to the SQLite file, if given)."""
    conn = connections["default"]
    conn.connection = None
    conn.in_atomic_block = False
    conn.savepoint_ids = []
    conn.needs_rollback = False
    if sqlite_file is not None:
        conn.settings_dict["NAME"] = sqlite_file


def _worker(
    sqlite_file: str | None, project_id: int, user_id: int, seed: int, start: Any, out: Any
) -> None:  # pragma: no cover - runs in a child process
    _use_db(sqlite_file)
    from django.contrib.auth import get_user_model

    from feedback.models import Project
    from feedback.services.distribution import annotation_submit, item_next, item_skip

    rng = random.Random(seed)
    user = get_user_model().objects.get(pk=user_id)
    project = Project.objects.get(pk=project_id)
    report: dict[str, Any] = {
        "created": [],
        "retried": 0,
        "late": 0,
        "expired": 0,
        "skipped": [],
        "errors": [],
    }
    start.wait()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            lease = item_next(project=project, user=user)
            if lease is None:
                break
            roll = rng.random()
            key = f"{user_id}-{lease.item_id}"
            payload = {"choice": rng.choice(["A", "B"])}
            if roll < 0.05:
                item_skip(user=user, item_id=lease.item_id, reason="hammer skip")
                report["skipped"].append(lease.item_id)
                continue
            if roll < 0.09:
                time.sleep(project.lease_ttl_seconds + 0.05)  # walk away: the lease expires
                try:
                    ann, created = annotation_submit(
                        user=user, item_id=lease.item_id, payload=payload, idempotency_key=key
                    )
                    report["errors"].append(f"late submit accepted on item {lease.item_id}")
                except NoLiveLease:
                    report["late"] += 1
                continue
            try:
                ann, created = annotation_submit(
                    user=user,
                    item_id=lease.item_id,
                    payload=payload,
                    idempotency_key=key,
                    demonstration="Better." if roll > 0.9 else "",
                )
            except NoLiveLease:  # a slow machine outlived the lease: refused, as it must be
                report["expired"] += 1
                continue
            if not created:
                report["errors"].append(f"first submit on item {lease.item_id} not created")
            report["created"].append(ann.pk)
            if roll < 0.25:
                again, created_again = annotation_submit(
                    user=user, item_id=lease.item_id, payload={"choice": "A"}, idempotency_key=key
                )
                if created_again or again.pk != ann.pk:
                    report["errors"].append(f"retry on item {lease.item_id} wrote again")
                report["retried"] += 1
    except Exception as exc:
        report["errors"].append(f"{type(exc).__name__}: {exc}")
    out.put(report)


def _monitor(sqlite_file: str | None, project_id: int, stop: Any, out: Any) -> None:  # pragma: no cover
    """Poll the invariant while the workers run."""
    _use_db(sqlite_file)
    from django.db.models import Count, F, Q
    from django.utils import timezone

    from feedback.models import Item

    worst: list[tuple[int, int, int, int]] = []
    polls = 0
    while not stop.is_set():
        rows = (
            Item.objects.filter(project_id=project_id)
            .annotate(live=Count("leases", filter=Q(leases__expires_at__gt=timezone.now())))
            .filter(
                Q(annotations_count__gt=F("annotations_required"))
                | Q(live__gt=F("annotations_required") - F("annotations_count"))
            )
            .values_list("id", "annotations_count", "live", "annotations_required")
        )
        worst += list(rows)
        polls += 1
        time.sleep(0.01)
    out.put({"violations": worst, "polls": polls})


def _verify(sqlite_file: str | None, project_id: int, out: Any) -> None:  # pragma: no cover
    _use_db(sqlite_file)
    from django.db.models import Count

    from feedback.models import Annotation, Item, Lease, PreferencePair

    items = list(
        Item.objects.filter(project_id=project_id)
        .annotate(n=Count("annotations", distinct=True))
        .values_list("id", "annotations_count", "n", "annotations_required", "is_open")
    )
    pairs_per_annotation = list(
        Annotation.objects.filter(item__project_id=project_id)
        .annotate(p=Count("pairs"))
        .values_list("p", flat=True)
    )
    out.put(
        {
            "items": items,
            "annotation_ids": sorted(
                Annotation.objects.filter(item__project_id=project_id).values_list("id", flat=True)
            ),
            "pairs_per_annotation": pairs_per_annotation,
            "live_leases": Lease.objects.filter(item__project_id=project_id).count(),
            "pairs": PreferencePair.objects.filter(annotation__item__project_id=project_id).count(),
        }
    )


def _copy_to_file(path: Path) -> str:
    """The test database lives in memory; a child process on SQLite needs a file: copy it over."""
    connection.ensure_connection()
    target = sqlite3.connect(path)
    connection.connection.backup(target)
    target.close()
    return str(path)


def _run_child(target, *args) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, out))
    p.start()
    result = out.get(timeout=60)
    p.join(10)
    return result


def _hammer(tmp_path: Path, project_factory, user_factory, make_item) -> None:
    project = project_factory(annotations_required=REQUIRED, lease_ttl_seconds=2)
    for _ in range(ITEMS):
        make_item(project)
    users = [user_factory() for _ in range(WORKERS)]
    sqlite_file = None
    if connection.vendor == "sqlite":
        sqlite_file = _copy_to_file(tmp_path / "hammer.sqlite3")
    else:
        connections.close_all()  # children must not share the parent's socket

    ctx = mp.get_context("fork")
    start, stop = ctx.Event(), ctx.Event()
    out, mon_out = ctx.Queue(), ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(sqlite_file, project.pk, u.pk, i, start, out))
        for i, u in enumerate(users)
    ]
    monitor = ctx.Process(target=_monitor, args=(sqlite_file, project.pk, stop, mon_out))
    for p in [*workers, monitor]:
        p.start()
    start.set()
    reports = [out.get(timeout=DEADLINE_S + 30) for _ in workers]
    stop.set()
    monitored = mon_out.get(timeout=30)
    for p in [*workers, monitor]:
        p.join(10)
    state = _run_child(_verify, sqlite_file, project.pk)

    errors = [e for r in reports for e in r["errors"]]
    assert not errors, errors
    created = sorted(a for r in reports for a in r["created"])
    # nothing doubled, nothing lost: exactly the annotations the workers were told were stored
    assert len(created) == len(set(created))
    assert created == state["annotation_ids"]
    assert all(p == 1 for p in state["pairs_per_annotation"]) and state["pairs"] == len(created)
    for item_id, count, rows, required, is_open in state["items"]:
        assert rows == count <= required, (item_id, count, rows, required)
        assert is_open == (count < required)
    # only the abandoned (and, on a slow machine, outlived) leases remain, all expired
    assert state["live_leases"] <= sum(r["late"] + r["expired"] for r in reports)
    assert monitored["violations"] == [] and monitored["polls"] > 3
    full = sum(1 for _, count, _, required, _ in state["items"] if count == required)
    assert full >= 0.9 * ITEMS, (full, ITEMS)
    assert sum(r["retried"] for r in reports) > 0
    print(
        f"{connection.vendor}: {len(created)} annotations by {WORKERS} processes, {full}/{ITEMS} items full, "
        f"{sum(r['retried'] for r in reports)} retries, {sum(r['late'] for r in reports)} late submits refused, "
        f"{sum(r['expired'] for r in reports)} outlived, {sum(len(r['skipped']) for r in reports)} skips, "
        f"monitor polled {monitored['polls']} times"
    )


def _next_on_file(
    sqlite_file: str, project_id: int, first_id: int, user_id: int, out: Any
) -> None:  # pragma: no cover
    """In a child, on the SQLite file: a next (after a first one, which tunes the new connection), its
    statements, and what a second connection then sees."""
    _use_db(sqlite_file)
    from django.contrib.auth import get_user_model
    from django.test.utils import CaptureQueriesContext

    from feedback.models import Project
    from feedback.services.distribution import item_next, locking

    user = get_user_model().objects.get(pk=user_id)
    project = Project.objects.get(pk=project_id)
    item_next(project=project, user=get_user_model().objects.get(pk=first_id))
    locked: list[bool] = []

    def under_lock(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        locked.append(locking._process_lock.locked())  # held from before the flock until after it is released
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(under_lock):
        lease = item_next(project=project, user=user)
    other = sqlite3.connect(sqlite_file)
    seen = other.execute(
        "SELECT id, item_id FROM feedback_lease WHERE annotator_id = ?", [user_id]
    ).fetchall()
    other.close()
    out.put(
        {
            "sql": [q["sql"] for q in ctx.captured_queries],
            "locked": locked,
            "lease": [lease.pk, lease.item_id],
            "in_transaction": connection.connection.in_transaction,
            "seen": [list(r) for r in seen],
        }
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_next_on_a_sqlite_file_leases_in_autocommit(tmp_path, project_factory, user_factory, make_item):
    """On a SQLite file next is one statement, the INSERT that picks and leases, run in autocommit under the
    write lock (write_statement): no BEGIN, the live-lease check riding on it, and the lease committed when
    next returns."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write path (this run: PostgreSQL)")
    project = project_factory(annotations_required=2)
    for _ in range(3):
        make_item(project)
    first, user = user_factory(), user_factory()
    sqlite_file = _copy_to_file(tmp_path / "next.sqlite3")
    got = _run_child(_next_on_file, sqlite_file, project.pk, first.pk, user.pk)
    assert not any(q.upper().startswith("BEGIN") for q in got["sql"]), got["sql"]
    assert len(got["sql"]) == 1 and got["sql"][0].startswith("INSERT INTO"), got["sql"]
    assert got["locked"] == [True] and not got["in_transaction"]
    assert got["seen"] == [got["lease"]]


def _failed_submit_on_file(
    sqlite_file: str, project_id: int, user_id: int, out: Any
) -> None:  # pragma: no cover
    """In a child, on the SQLite file: two leases, a submit, then a submit of the other item with the same
    idempotency key, which fails at the annotation INSERT, inside submit's raw BEGIN ... COMMIT block."""
    _use_db(sqlite_file)
    from django.contrib.auth import get_user_model

    from feedback.errors import IdempotencyKeyReused
    from feedback.models import Annotation, Item, Lease, Project
    from feedback.services.distribution import annotation_submit, item_next

    user = get_user_model().objects.get(pk=user_id)
    project = Project.objects.get(pk=project_id)
    first = item_next(project=project, user=user)
    annotation_submit(user=user, item_id=first.item_id, payload={"choice": "A"}, idempotency_key="k-1")
    second = item_next(project=project, user=user)
    error = ""
    try:
        annotation_submit(user=user, item_id=second.item_id, payload={"choice": "B"}, idempotency_key="k-1")
    except IdempotencyKeyReused as exc:
        error = type(exc).__name__
    out.put(
        {
            "error": error,
            "in_transaction": connection.connection.in_transaction,
            "lease_kept": Lease.objects.filter(item_id=second.item_id, annotator=user).exists(),
            "count": Item.objects.get(pk=second.item_id).annotations_count,
            "annotations": Annotation.objects.filter(annotator=user).count(),
            # the connection still writes: the second item can be submitted with a fresh key
            "retry": annotation_submit(
                user=user, item_id=second.item_id, payload={"choice": "B"}, idempotency_key="k-2"
            )[1],
        }
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_failed_submit_on_a_sqlite_file_rolls_back(tmp_path, project_factory, user_factory, make_item):
    """Submit's statements on a SQLite file run in a BEGIN ... COMMIT sent directly (locking.write_block): a
    statement that fails rolls all of them back (the lease deleted and the item counted before it come back),
    releases the write lock and leaves the connection out of any transaction."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write path (this run: PostgreSQL)")
    project = project_factory(annotations_required=1)
    make_item(project)
    make_item(project)
    user = user_factory()
    sqlite_file = _copy_to_file(tmp_path / "submit.sqlite3")
    got = _run_child(_failed_submit_on_file, sqlite_file, project.pk, user.pk)
    assert got["error"] == "IdempotencyKeyReused", got
    assert not got["in_transaction"] and got["lease_kept"] and got["count"] == 0, got
    assert got["annotations"] == 1 and got["retry"] is True, got


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_many_annotators_hammer_next_and_submit(tmp_path, project_factory, user_factory, make_item):
    _hammer(tmp_path, project_factory, user_factory, make_item)


def test_stale_pick_is_rechecked_under_the_row_lock(monkeypatch, project_factory, user_factory, make_item):
    """The PostgreSQL pitfall made deterministic: a pick whose snapshot predates another next's commit sees a
    full item as free. The lease insert re-counts live leases in its own statement and refuses; we pick again."""
    from feedback.models import Lease
    from feedback.services import distribution
    from feedback.services.distribution import leasing

    if connection.vendor != "postgresql":
        pytest.skip("SQLite picks and leases in one statement under the write lock: its pick cannot be stale")
    project = project_factory(annotations_required=1)
    full, free = make_item(project), make_item(project)
    holder, late = user_factory(), user_factory()
    assert distribution.item_next(project=project, user=holder).item_id == full.pk

    real_pick = leasing._pick_sql

    def stale_pick(order: str, *, exclude: int) -> str:
        # what a stale snapshot sees: no live leases anywhere
        return real_pick(order, exclude=exclude).replace("l.expires_at > %s", "l.expires_at > %s AND 1 = 0")

    monkeypatch.setattr(leasing, "_pick_sql", stale_pick)  # where next looks it up
    lease = distribution.item_next(project=project, user=late)
    assert lease is not None and lease.item_id == free.pk  # the full item was refused, the next one taken
    assert Lease.objects.filter(item=full).count() == 1
    assert distribution.item_next(project=project, user=user_factory()) is None  # both full now
