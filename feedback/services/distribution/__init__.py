"""Task distribution: lease the next item, submit, skip, undo.

Invariant (checked by the database where it can be, and by these statements where it cannot):
for every item, ``annotations_count + live leases <= annotations_required``.

How each backend makes racing ``next`` calls safe:
- SQLite: writers are serialised by the write lock (locking.py: this process's lock, then an flock, then
  SQLite's own; a transaction starts with BEGIN IMMEDIATE). ``next`` is one INSERT ... SELECT run under that
  lock: it picks the first item with room by the latest commit and leases it, so no other writer can come
  between the pick and the lease. An earlier version read a window of free items outside the lock and
  re-checked them in the INSERT, to keep the pick out of the lock; but every statement that starts after
  another process's commit finds SQLite's page cache emptied (the pick re-read ~27 pages each time), and the
  two statements, the window's rows and the re-check cost more than the lock time they saved: in process,
  1.69 M instructions per next + submit against 2.13 M (callgrind), and one statement per next fewer.
- PostgreSQL (READ COMMITTED): the pick locks the item row with ``FOR UPDATE SKIP LOCKED``; the lease is then
  inserted by ``arbiter_lease_insert`` (migration 0007), called by the same statement after the lock is
  taken, which re-counts live leases in a statement of its own. A VOLATILE function takes a fresh snapshot
  per statement, so it sees leases that another ``next`` committed just before we locked the row (the
  pick's snapshot may not). If the re-check inserts nothing, we pick again.
Submit turns a lease into an annotation under the same row lock (it updates the item row), so the sum
``annotations_count + live leases`` never grows.

SQL per call on the hot path (statements sent through Django's cursor; BEGIN is one on SQLite):
- next, SQLite: the pick and the lease insert in one statement (in autocommit under the file lock, see
  write_statement; it returns the item's prompt and candidates) = 1; with the live-lease check riding on it,
  one more only when nothing was leased (a live lease, or nothing left).
- next, PostgreSQL: live-lease check, pick (item, prompt and candidates in one row), order shown and lease
  insert in one statement, in autocommit (SET LOCAL synchronous_commit = off rides on it) = 1 (one more per
  re-pick).
- submit, SQLite: BEGIN + delete lease (RETURNING order shown) + update item (RETURNING kind) + insert
  annotation + insert derived rows = 5 (6 with a demonstration); BEGIN and COMMIT are sent directly, without
  an atomic block (locking.write_block).
- submit, PostgreSQL, in autocommit (no BEGIN/COMMIT round trips): read the live lease (what validation
  needs; skipped when this process served the next, see _SUBMIT_CONTEXT) + take it, count it on the item,
  insert the annotation and all derived rows in one statement (data-modifying CTEs, atomic on its own) = 1-2.

Modules: ``leasing`` (item_next, lease_candidates), ``submitting`` (annotation_submit), ``sql`` (the SQL text of
both), ``raw`` (rows read and written without the ORM's layers), ``locking`` (SQLite's write lock:
write_transaction, write_statement, write_block), ``submit_context`` (_SUBMIT_CONTEXT); skip, undo and reclaim
are here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F
from django.utils import timezone

from feedback.errors import InvalidInput, NoLiveLease, NotFound, UndoWindowPassed
from feedback.models import Annotation, Item, Lease, Skip
from feedback.services.distribution.leasing import MAX_PICK_ATTEMPTS, item_next, lease_candidates
from feedback.services.distribution.locking import write_statement, write_transaction
from feedback.services.distribution.submitting import annotation_submit

__all__ = [
    "MAX_PICK_ATTEMPTS",
    "annotation_submit",
    "annotation_undo",
    "item_next",
    "item_skip",
    "lease_candidates",
    "leases_reclaim",
    "write_statement",
    "write_transaction",
]


def item_skip(*, user: AbstractBaseUser, item_id: int, reason: str) -> Skip:
    """Give back a leased item with a reason; the user is not offered it again. Idempotent."""
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise InvalidInput("say why you skip (reason)", details={"field": "reason"})
    if len(reason) > 500:
        raise InvalidInput("reason is at most 500 characters", details={"field": "reason"})
    now = timezone.now()
    with write_transaction():
        deleted, _ = Lease.objects.filter(item_id=item_id, annotator=user, expires_at__gt=now).delete()
        if not deleted:
            existing = Skip.objects.filter(item_id=item_id, annotator=user).first()
            if existing is not None:
                return existing
            raise NoLiveLease(f"you hold no live lease on item {item_id}", details={"item_id": item_id})
        return Skip.objects.create(item_id=item_id, annotator=user, reason=reason)


def annotation_undo(*, user: AbstractBaseUser, annotation_id: int) -> Lease:
    """Withdraw the user's own annotation within the project's undo window.

    Deletes the annotation and its derived rows, reopens the item, and gives the item back to the user as a
    fresh lease with the same order shown, so the next ``item_next`` returns it to be judged again (skipping
    it frees the slot for others).
    """
    with write_transaction():
        now = timezone.now()
        annotation = (
            Annotation.objects.select_related("item__project")
            .select_for_update(of=("self",))
            .filter(pk=annotation_id, annotator=user)
            .first()
        )
        if annotation is None:
            raise NotFound(f"you have no annotation {annotation_id}")
        project = annotation.item.project
        if annotation.created_at + timedelta(seconds=project.undo_window_seconds) < now:
            raise UndoWindowPassed(
                f"annotation {annotation_id} is older than this project's undo window "
                f"({project.undo_window_seconds} s)"
            )
        item_id = annotation.item_id
        order_shown = annotation.order_shown
        annotation.delete()  # cascades to its pairs, labels and demonstration
        Item.objects.filter(pk=item_id).update(annotations_count=F("annotations_count") - 1, is_open=True)
        lease, _ = Lease.objects.update_or_create(
            item_id=item_id,
            annotator=user,
            defaults={
                "order_shown": order_shown,
                "created_at": now,
                "expires_at": now + timedelta(seconds=project.lease_ttl_seconds),
            },
        )
        return lease


def leases_reclaim(*, now: datetime | None = None) -> int:
    """Delete expired leases (they already count for nothing; this keeps the table small). Returns how many."""
    deleted, _ = Lease.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
