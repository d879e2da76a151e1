"""Drop the single-column indexes of six foreign keys that already lead a composite index or unique
constraint (lease: item, annotator; annotation: item, annotator; preference pair and binary label: annotation).
Each was one more B-tree written per next + submit cycle. The state changes are plain AlterFields; the database
change is a DROP INDEX (SQLite would otherwise rebuild each table)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("feedback", "0005_project_min_agreement_help"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    state_operations = [
        migrations.AlterField(
            model_name="annotation",
            name="annotator",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="annotations",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="annotation",
            name="item",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="annotations",
                to="feedback.item",
            ),
        ),
        migrations.AlterField(
            model_name="binarylabel",
            name="annotation",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="labels",
                to="feedback.annotation",
            ),
        ),
        migrations.AlterField(
            model_name="lease",
            name="annotator",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="leases",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="lease",
            name="item",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="leases",
                to="feedback.item",
            ),
        ),
        migrations.AlterField(
            model_name="preferencepair",
            name="annotation",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="pairs",
                to="feedback.annotation",
            ),
        ),
    ]

    INDEXES = [
        ("feedback_annotation_annotator_id_d7fc88b0", "feedback_annotation", "annotator_id"),
        ("feedback_annotation_item_id_eecbfd9d", "feedback_annotation", "item_id"),
        ("feedback_binarylabel_annotation_id_1121e125", "feedback_binarylabel", "annotation_id"),
        ("feedback_lease_annotator_id_efaad369", "feedback_lease", "annotator_id"),
        ("feedback_lease_item_id_3c4e1fb1", "feedback_lease", "item_id"),
        ("feedback_preferencepair_annotation_id_03288de2", "feedback_preferencepair", "annotation_id"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=state_operations,
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX "{name}" ON "{table}" ("{column}")',
                )
                for name, table, column in INDEXES
            ],
        )
    ]
