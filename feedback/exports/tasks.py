"""Celery task: write a snapshot in the background (queue ``default``), progress kept on the row."""

from __future__ import annotations

import time

from celery import shared_task

from config.queues import Queue
from feedback.exports.rows import source_count
from feedback.exports.services import snapshot_mark_failed, snapshot_spec, snapshot_write
from feedback.models import DatasetSnapshot, SnapshotStatus


@shared_task(queue=Queue.DEFAULT.value, acks_late=True, reject_on_worker_lost=True)
def snapshot_write_task(snapshot_id: int, formats: list[str]) -> str:
    """Write a draft snapshot. Safe to run again after a dead worker: files land in a temporary folder
    and are moved into place only when complete, and the hash is fixed by the first complete write."""
    snap = DatasetSnapshot.objects.filter(pk=snapshot_id).first()
    if snap is None or snap.status != SnapshotStatus.DRAFT:
        return "not a draft"
    total = source_count(snapshot_spec(snap), snap.frozen)
    state = {"done": 0, "at": 0.0}

    def progress(n: int) -> None:
        state["done"] += n
        now = time.monotonic()
        if now - state["at"] >= 1.0:
            state["at"] = now
            DatasetSnapshot.objects.filter(pk=snapshot_id, status=SnapshotStatus.DRAFT).update(
                stats={"progress": {"done": state["done"], "total": total}}
            )

    DatasetSnapshot.objects.filter(pk=snapshot_id).update(stats={"progress": {"done": 0, "total": total}})
    try:
        snapshot_write(snapshot=snap, formats=tuple(formats), progress=progress)
    except Exception as exc:
        snapshot_mark_failed(snapshot=snap, error=f"{type(exc).__name__}: {exc}")
        raise
    return "written"
