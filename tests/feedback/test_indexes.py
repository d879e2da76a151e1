"""The tables every next + submit cycle writes carry no index that another one already covers: each index is
one more B-tree written per row (a lease is inserted and deleted per cycle). Migration 0006 dropped six."""

from __future__ import annotations

import pytest
from django.db import connection

from feedback.models import Annotation, BinaryLabel, Lease, PreferencePair

pytestmark = pytest.mark.django_db

HOT_TABLES = [m._meta.db_table for m in (Lease, Annotation, PreferencePair, BinaryLabel)]


def _indexes(table: str) -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {
        name: c["columns"]
        for name, c in constraints.items()
        if (c["index"] or c["unique"]) and not c["primary_key"] and c["columns"]
    }


@pytest.mark.parametrize("table", HOT_TABLES)
def test_no_index_is_a_prefix_of_another(table):
    indexes = _indexes(table)
    redundant = [
        (name, cols, other)
        for name, cols in indexes.items()
        for other, other_cols in indexes.items()
        if other != name and len(cols) < len(other_cols) and other_cols[: len(cols)] == cols
    ]
    assert not redundant, redundant


def test_the_lookups_of_the_hot_path_keep_an_index():
    """What the dropped single-column indexes served is still served, by the composite ones."""
    leading = {(t, cols[0]) for t in HOT_TABLES for cols in _indexes(t).values()}
    for table, column in [
        (Lease._meta.db_table, "item_id"),
        (Lease._meta.db_table, "annotator_id"),
        (Annotation._meta.db_table, "item_id"),
        (Annotation._meta.db_table, "annotator_id"),
        (PreferencePair._meta.db_table, "annotation_id"),
        (BinaryLabel._meta.db_table, "annotation_id"),
    ]:
        assert (table, column) in leading, (table, column)
