"""The hot path's cursor: on PostgreSQL its statements are prepared after a few runs (planned once per
connection) and still counted like any statement; elsewhere it is Django's usual cursor. (The prepared pick's
generic plan is checked in tests/feedback/test_distribution_plan.py.)"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from feedback.db import hot_cursor
from feedback.models import Item
from feedback.services.distribution import annotation_submit, item_next

pg_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's (this run: SQLite)"
)


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_the_hot_cursor_runs_statements_like_any_cursor():
    with CaptureQueriesContext(connection) as ctx, hot_cursor() as cursor:
        cursor.execute("SELECT %s + %s", [2, 3])
        assert cursor.fetchone()[0] == 5
    # logged and counted once ("SELECT $1 + $2" on PostgreSQL, where the server binds the parameters)
    assert len(ctx.captured_queries) == 1 and ctx.captured_queries[0]["sql"].startswith("SELECT ")


@pg_only
@pytest.mark.django_db(transaction=True)
def test_next_and_submit_statements_are_prepared_after_a_few_runs(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=1)
    for _ in range(8):
        make_item(project)
    assert connection.connection.prepare_threshold == 5
    statements_per_cycle = []
    for n in range(7):
        user = user_factory()
        with CaptureQueriesContext(connection) as ctx:
            lease = item_next(project=project, user=user)
            annotation_submit(
                user=user, item_id=lease.item_id, payload={"choice": "A"}, idempotency_key=f"k{n}"
            )
        statements_per_cycle.append(
            len([q for q in ctx.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")])
        )
    # counted as any statement (next 1, submit 1: this process leased the item, so no read), prepared or not
    assert statements_per_cycle == [2] * 7, statements_per_cycle
    prepared = _prepared()
    # next: live check, pick and lease (the lease INSERT runs inside arbiter_lease_insert, planned by PL/pgSQL)
    assert any("FOR UPDATE OF i SKIP LOCKED" in s and "arbiter_lease_insert" in s for s in prepared), prepared
    assert any(s.startswith("WITH d AS (DELETE FROM feedback_lease") for s in prepared), (
        prepared
    )  # submit's write
    # the ORM's own queries are never prepared (client-side binding: no limit on IN lists)
    list(Item.objects.filter(id__in=list(range(70_000))).values_list("id", flat=True)[:1])
    assert not any("feedback_item" in s and "IN (" in s for s in _prepared())


def test_prepared_statements_can_be_turned_off(monkeypatch):
    from config.settings.base import database_from_env

    url = "postgres://u@db:5432/arbiter"
    assert database_from_env(url)["OPTIONS"]["prepare_threshold"] == 5
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "0")  # a pooler in transaction mode
    assert "prepare_threshold" not in database_from_env(url).get("OPTIONS", {})
    assert "prepare_threshold" not in database_from_env("sqlite:///x.sqlite3")["OPTIONS"]


@pg_only
@pytest.mark.django_db(transaction=True)
def test_submit_reads_the_lease_unless_this_process_leased_it(project_factory, user_factory, make_item):
    """PostgreSQL: a submit to the process that served the next skips its read (1 statement); another process
    (nothing remembered) reads the lease first (2). What is remembered is never trusted: after an admin turned
    ties off, the remembered "ties allowed" does not take the lease; the submit reads it and refuses the tie."""
    from feedback.errors import InvalidInput
    from feedback.services.distribution import submit_context
    from feedback.services.project_admin import project_update

    project = project_factory(annotations_required=1, allow_ties=True)
    for _ in range(3):
        make_item(project)

    def submit(user, lease, choice, key):
        with CaptureQueriesContext(connection) as ctx:
            annotation, created = annotation_submit(
                user=user, item_id=lease.item_id, payload={"choice": choice}, idempotency_key=key
            )
        return annotation, created, len(ctx.captured_queries)

    a, b, c = user_factory(), user_factory(), user_factory()
    lease = item_next(project=project, user=a)
    annotation, created, n = submit(a, lease, "A", "a")
    assert created and n == 1 and annotation.payload["choice"] == "A"

    lease = item_next(project=project, user=b)
    submit_context._SUBMIT_CONTEXT.clear()  # as if another process served the next
    annotation, created, n = submit(b, lease, "B", "b")
    assert created and n == 2 and annotation.item_id == lease.item_id

    lease = item_next(project=project, user=c)
    project_update(project=project, allow_ties=False)
    with pytest.raises(InvalidInput):
        submit(c, lease, "tie", "c")
    assert Item.objects.get(pk=lease.item_id).annotations_count == 0  # nothing written, the lease still held
    annotation, created, _ = submit(c, lease, "A", "c2")
    assert created and Item.objects.get(pk=lease.item_id).annotations_count == 1
