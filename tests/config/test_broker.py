"""A task really travels through the configured broker (the filesystem broker by default, Redis when
CELERY_BROKER_URL says so, as in CI's second run) to a worker, which does the work in the database.
The rest of the suite runs tasks eagerly, where they are called."""

from __future__ import annotations

import threading

import pytest
from celery.signals import task_postrun
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

    # The test waits for the worker's signal rather than polling the row: on SQLite the test
    # database is a shared-cache in-memory one, where a read from this thread while the worker
    # writes makes the worker fail with "database table is locked" (no busy timeout applies).
    finished = threading.Event()

    def on_postrun(*, sender: object, args: tuple[object, ...], **_: object) -> None:
        if getattr(sender, "name", None) == snapshot_write_task.name and args and args[0] == snap.pk:
            finished.set()

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    task_postrun.connect(on_postrun, weak=False)
    try:
        app.control.purge()  # nothing left over from an earlier run reaches this worker
        with start_worker(
            app, pool="solo", concurrency=1, queues=["default"], perform_ping_check=False, shutdown_timeout=30
        ):
            snapshot_write_task.delay(snap.pk, ["jsonl"])
            assert finished.wait(timeout=60), "the worker did not run the task within 60 s"
    finally:
        task_postrun.disconnect(on_postrun)
        app.conf.task_always_eager = eager
    snap.refresh_from_db()
    assert snap.status == SnapshotStatus.WRITTEN, (settings.CELERY_BROKER_URL, snap.status, snap.error)
    assert snap.row_counts["train"] + snap.row_counts.get("test", 0) == 1
    assert DatasetSnapshot.objects.get(pk=snap.pk).content_hash


@pytest.fixture
def settings_tmp_dirs(settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    return tmp_path
