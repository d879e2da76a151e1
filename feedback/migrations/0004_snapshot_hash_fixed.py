"""The database refuses to change a snapshot's content hash once it is set (DESIGN: invariants)."""

from django.db import migrations

SQLITE_UP = """
CREATE TRIGGER IF NOT EXISTS feedback_snapshot_hash_fixed
BEFORE UPDATE OF content_hash ON feedback_datasetsnapshot
FOR EACH ROW WHEN OLD.content_hash <> '' AND NEW.content_hash <> OLD.content_hash
BEGIN
    SELECT RAISE(ABORT, 'a snapshot''s content hash never changes once written');
END;
"""
SQLITE_DOWN = "DROP TRIGGER IF EXISTS feedback_snapshot_hash_fixed;"

PG_UP = """
CREATE OR REPLACE FUNCTION feedback_snapshot_hash_fixed() RETURNS trigger AS $$
BEGIN
    IF OLD.content_hash <> '' AND NEW.content_hash IS DISTINCT FROM OLD.content_hash THEN
        RAISE EXCEPTION 'a snapshot''s content hash never changes once written';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS feedback_snapshot_hash_fixed ON feedback_datasetsnapshot;
CREATE TRIGGER feedback_snapshot_hash_fixed BEFORE UPDATE ON feedback_datasetsnapshot
FOR EACH ROW EXECUTE FUNCTION feedback_snapshot_hash_fixed();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS feedback_snapshot_hash_fixed ON feedback_datasetsnapshot;
DROP FUNCTION IF EXISTS feedback_snapshot_hash_fixed();
"""


def _run(sql_by_vendor):
    def run(apps, schema_editor):
        sql = sql_by_vendor.get(schema_editor.connection.vendor)
        if sql:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("feedback", "0003_snapshot_export_fields")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_UP, "postgresql": PG_UP}),
            _run({"sqlite": SQLITE_DOWN, "postgresql": PG_DOWN}),
        )
    ]
