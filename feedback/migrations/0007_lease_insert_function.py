"""PostgreSQL: ``arbiter_lease_insert``, the lease INSERT of ``item_next`` as a function, so that the pick
(``FOR UPDATE SKIP LOCKED``) and the insert run in one statement (one round trip, no BEGIN/COMMIT).

The insert must re-count live leases in a snapshot taken *after* the pick locked the item row (a lease
another ``next`` committed just before may be missing from the pick's snapshot: DESIGN.md). A VOLATILE
function takes a fresh snapshot for each statement it runs (READ COMMITTED), which is what the second
statement of the earlier two-statement version gave. Nothing to do on other databases."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION arbiter_lease_insert(
    p_item bigint, p_annotator integer, p_order jsonb, p_now timestamptz, p_expires timestamptz
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_id bigint;
BEGIN
    -- Leases the item unless its annotations and live leases (counted now, while the caller holds the
    -- item's row lock) already fill it; an expired lease of this annotator is renewed in place.
    INSERT INTO feedback_lease (item_id, annotator_id, order_shown, created_at, expires_at)
    SELECT i.id, p_annotator, p_order, p_now, p_expires FROM feedback_item i
    WHERE i.id = p_item AND i.is_open
      AND i.annotations_count + (SELECT COUNT(*) FROM feedback_lease l
                                 WHERE l.item_id = i.id AND l.expires_at > p_now) < i.annotations_required
    ON CONFLICT (item_id, annotator_id) DO UPDATE SET order_shown = excluded.order_shown,
        created_at = excluded.created_at, expires_at = excluded.expires_at
    RETURNING feedback_lease.id INTO v_id;
    RETURN v_id;
END
$$;
"""

DROP = "DROP FUNCTION IF EXISTS arbiter_lease_insert(bigint, integer, jsonb, timestamptz, timestamptz);"


def create(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("feedback", "0006_drop_redundant_fk_indexes")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
