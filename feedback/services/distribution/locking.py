"""The write lock of a SQLite file: writers queue on this process's lock, then an flock beside the database,
instead of polling in SQLite's busy handler; the WAL is checkpointed in a background thread. On other
backends write_transaction is ``transaction.atomic()``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

_process_lock = threading.Lock()
_lock_files: dict[str, int] = {}
_checkpointers: dict[str, int] = {}  # database path -> pid of the process whose thread checkpoints it
# Background PASSIVE checkpoints (they never block writers) every quarter second; the writer's own automatic
# checkpoint, which runs inside COMMIT under the write lock and syncs the files, then finds the work done.
# Measured on this machine over 2,000 commits (next + submit): commit time summed 1,964 ms with SQLite's
# defaults, 678 ms with these (median 0.06 ms either way; the tail is the checkpoint's fsync).
CHECKPOINT_EVERY_S = 0.25
AUTOCHECKPOINT_PAGES = 4000


def _checkpoint_loop(path: str) -> None:  # pragma: no cover - a daemon thread
    import sqlite3
    import time

    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    while True:
        time.sleep(CHECKPOINT_EVERY_S)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass


def _sqlite_tune(db: Any, path: str) -> None:
    """Checkpoint the WAL mostly in a background thread of this process rather than in whichever request
    commits the 1000th page: SQLite's automatic checkpoint runs inside COMMIT, under the write lock, and
    syncs the files (measured here with the defaults: commit median 0.06 ms, p99 24 ms, max 366 ms). The
    automatic checkpoint stays on (at 4000 pages) so the WAL stays bounded even if the thread falls behind.
    Called with _process_lock held."""
    import os

    if _checkpointers.get(path) != os.getpid():
        _checkpointers[path] = os.getpid()
        threading.Thread(target=_checkpoint_loop, args=(path,), daemon=True, name="sqlite-checkpoint").start()
    raw = db.connection
    if getattr(db, "_arbiter_tuned", None) is not raw:
        with db.cursor() as cursor:  # once per connection (counted like any statement)
            cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        db._arbiter_tuned = raw


# The functions below take the connection wrapper once (``connections[alias]``) rather than going through the
# ``connection`` proxy, which looks the wrapper up again on every attribute (~2.4 us each; it was ~30 lookups a
# next + submit cycle).


def _queues_on_file_lock(db: Any) -> bool:
    """Whether this write queues on the file lock: a SQLite file, outside any transaction of ours."""
    return not (db.vendor != "sqlite" or fcntl is None or db.in_atomic_block or db.is_in_memory_db())


@contextmanager
def _file_lock(db: Any) -> Iterator[None]:
    """Hold this process's lock, then an flock on a file beside the SQLite database (see write_transaction)."""
    path = str(db.settings_dict["NAME"])
    with _process_lock:
        fd = _lock_files.get(path)
        if fd is None:
            import os

            fd = _lock_files[path] = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
        db.ensure_connection()
        _sqlite_tune(db, path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def write_transaction() -> Iterator[None]:
    """``transaction.atomic()``; on a SQLite file, writers first queue on a lock (this process's, then an
    flock on a file beside the database) so that they wait in the kernel and wake at once, instead of
    polling in SQLite's busy handler, which sleeps 1, 2, 5, 10, ... ms between tries and ruins the tail
    latency when many requests write at the same time (SQLite allows one writer anyway); and the WAL is
    checkpointed in the background (see _sqlite_tune)."""
    db = connections[DEFAULT_DB_ALIAS]
    if not _queues_on_file_lock(db):
        with transaction.atomic():
            yield
        return
    with _file_lock(db), transaction.atomic():
        yield


@contextmanager
def write_block() -> Iterator[Any]:
    """A cursor for a short block of raw statements that must commit together (submit's): on a SQLite file,
    under the file lock of write_transaction, ``BEGIN IMMEDIATE`` … ``COMMIT`` sent directly, without the
    atomic block's bookkeeping (switching autocommit off and on, savepoint state), which cost more than the
    BEGIN itself. The block must not open an atomic block of its own nor write through the ORM (both expect
    autocommit); reads are fine. Elsewhere, or inside a transaction of the caller's, ``write_transaction``."""
    db = connections[DEFAULT_DB_ALIAS]
    if not _queues_on_file_lock(db) or not db.get_autocommit():
        with write_transaction(), db.cursor() as cursor:
            yield cursor
        return
    with _file_lock(db), db.cursor() as cursor:
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            with db.wrap_database_errors:
                db.connection.rollback()
            raise
        with db.wrap_database_errors:
            db.connection.commit()


@contextmanager
def write_statement() -> Iterator[None]:
    """For one writing statement: on a SQLite file it runs in autocommit (a single statement is its own
    transaction, and takes SQLite's write lock when it starts, as BEGIN IMMEDIATE would) while this process
    holds the file lock of write_transaction; that saves the BEGIN statement and the atomic block's work.
    Fetch every row the statement returns inside the block: SQLite commits when the statement completes.
    Elsewhere the same as write_transaction."""
    db = connections[DEFAULT_DB_ALIAS]
    if not _queues_on_file_lock(db) or not db.get_autocommit():
        with write_transaction():
            yield
        return
    with _file_lock(db):
        yield
