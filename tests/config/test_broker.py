"""A task really travels through the configured broker (the filesystem broker by default, Redis when
CELERY_BROKER_URL says so, as in CI's second run) to a worker, which does the work in the database.
The rest of the suite runs tasks eagerly, where they are called."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from feedback.exports.services import snapshot_create
from feedback.exports.tasks import snapshot_write_task
from feedback.models import DatasetSnapshot, SnapshotStatus
from feedback.services.distribution import annotation_submit, item_next


@pytest.mark.django_db(transaction=True)
def test_a_task_goes_through_the_broker_to_a_worker(crew, settings_tmp_dirs):
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    lease = item_next(project=crew.project, user=crew.annotator)
    annotation_submit(
        user=crew.annotator, item_id=lease.item_id, payload={"choice": "A"}, idempotency_key="k"
    )
    snap = snapshot_create(
        name="through the broker", spec={"kind": "preference", "project_ids": [crew.project.pk]}
    )

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        app.control.purge()  # nothing left over from an earlier run reaches this worker
        with start_worker(
            app, pool="solo", concurrency=1, queues=["default"], perform_ping_check=False, shutdown_timeout=30
        ):
            snapshot_write_task.delay(snap.pk, ["jsonl"])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                snap.refresh_from_db()
                if snap.status != SnapshotStatus.DRAFT:
                    break
                time.sleep(0.2)
    finally:
        app.conf.task_always_eager = eager
    assert snap.status == SnapshotStatus.WRITTEN, (settings.CELERY_BROKER_URL, snap.status, snap.error)
    assert snap.row_counts["train"] + snap.row_counts.get("test", 0) == 1
    assert DatasetSnapshot.objects.get(pk=snap.pk).content_hash


@pytest.fixture
def settings_tmp_dirs(settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    return tmp_path
