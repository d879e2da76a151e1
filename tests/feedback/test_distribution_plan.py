"""The pick's query plan with many items done (DESIGN.md: SQLite ignored the partial "open items" index and
walked finished items). The pick must search the partial index by project, never scan the item table. On
PostgreSQL the pick is a SELECT (_pick_sql); on SQLite it is the lease INSERT's (_lease_next_sql_sqlite)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from feedback.models import Item
from feedback.services.distribution.raw import _dt
from feedback.services.distribution.sql import _lease_next_sql_sqlite, _pick_sql

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy_project(project_factory, make_item, user_factory):
    project = project_factory(annotations_required=1)
    template = make_item(project)
    Item.objects.bulk_create(
        Item(
            project=project,
            prompt=template.prompt,
            annotations_required=1,
            annotations_count=1 if n < 2500 else 0,
            is_open=n >= 2500,
            priority=n / 3000,
        )
        for n in range(3000)
    )
    return project, user_factory()


def _plan(sql: str, params: list) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute("ANALYZE feedback_item")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def _pick(order: str, project_id: int, user_id: int, *, check_live: bool = False) -> tuple[str, list]:
    """The pick as the backend runs it, and its parameters."""
    now = _dt(timezone.now())
    pick_params = [project_id, False, now, user_id, user_id]
    if connection.vendor != "sqlite":
        return _pick_sql(order, exclude=0), pick_params
    live = [user_id, project_id, now] if check_live else []
    return _lease_next_sql_sqlite(order, check_live), [user_id, now, now, *live, *pick_params]


@pytest.mark.parametrize(
    ("order", "index"), [("fewest", "item_open_fewest"), ("priority", "item_open_priority")]
)
def test_pick_uses_the_partial_index(busy_project, order, index):
    project, user = busy_project
    plan = _plan(*_pick(order, project.pk, user.pk))
    assert index in plan, plan
    if connection.vendor == "sqlite":
        item_lines = [line for line in plan.splitlines() if " i " in f" {line} " or "feedback_item" in line]
        assert all("SCAN" not in line for line in item_lines), plan
        assert f"SEARCH i USING INDEX {index} (project_id=?)" in plan, plan
    else:
        assert "Seq Scan on feedback_item" not in plan, plan


@pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the live-lease check in the lease INSERT is SQLite's"
)
@pytest.mark.parametrize(
    ("order", "index"), [("fewest", "item_open_fewest"), ("priority", "item_open_priority")]
)
def test_live_check_and_pick_keep_their_indexes(busy_project, order, index):
    """The first pick of a next carries the live-lease check (one statement): both halves keep their plans."""
    project, user = busy_project
    plan = _plan(*_pick(order, project.pk, user.pk, check_live=True))
    item_lines = [line for line in plan.splitlines() if " i " in f" {line} " or "feedback_item" in line]
    assert all("SCAN" not in line for line in item_lines), plan
    assert f"SEARCH i USING INDEX {index} (project_id=?)" in plan, plan
    assert "feedback_le_annotat_d66066_idx (annotator_id=? AND expires_at>?)" in plan, plan


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
@pytest.mark.parametrize(
    ("order", "index"), [("fewest", "item_open_fewest"), ("priority", "item_open_priority")]
)
def test_prepared_pick_keeps_the_partial_index(busy_project, order, index):
    """The pick is prepared on the server (feedback/db.py), and a prepared statement may switch to a generic plan,
    made without the parameters' values: that plan must search the partial index too."""
    project, user = busy_project
    sql = _pick_sql(order, exclude=0)
    for n in range(1, 6):
        sql = sql.replace("%s", f"${n}", 1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE feedback_item")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE pick_generic AS {sql}")
        cursor.execute(
            "EXPLAIN EXECUTE pick_generic(%s, %s, %s, %s, %s)",
            [project.pk, False, _dt(timezone.now()), user.pk, user.pk],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE pick_generic")
    assert index in plan, plan
    assert "Seq Scan on feedback_item" not in plan, plan
