"""Reads of snapshots: the ones a user may see, and the files of a written one."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, F, Q, QuerySet

from feedback.errors import NotFound
from feedback.models import DatasetSnapshot, Membership, Role


def snapshots_for_user(*, user: AbstractBaseUser) -> QuerySet[DatasetSnapshot]:
    """Snapshots all of whose projects the user reviews or administers, newest first."""
    qs = DatasetSnapshot.objects.prefetch_related("projects").order_by("-created_at", "-id")
    if getattr(user, "is_superuser", False):
        return qs
    readable = Membership.objects.filter(user_id=user.pk, role__in=[Role.REVIEWER, Role.ADMIN]).values(
        "project_id"
    )
    return qs.annotate(
        n_projects=Count("projects", distinct=True),
        n_readable=Count("projects", filter=Q(projects__in=readable), distinct=True),
    ).filter(n_projects__gt=0, n_projects=F("n_readable"))


def snapshot_files(*, snapshot: DatasetSnapshot) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file of a written snapshot, in a stable order."""
    if not snapshot.path:
        return []
    root = Path(snapshot.path)
    if not root.is_dir():
        return []
    return [(str(p.relative_to(root)), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()]


def snapshot_file_path(*, snapshot: DatasetSnapshot, name: str) -> Path:
    """The absolute path of one of the snapshot's files; refuses anything outside its folder."""
    if not snapshot.path:
        raise NotFound("this snapshot has not been written yet", code="snapshot_not_written")
    root = Path(snapshot.path).resolve()
    target = (root / name).resolve()
    if root not in target.parents or not target.is_file():
        raise NotFound(f"no file {name!r} in snapshot {snapshot.pk}", code="file_not_found")
    return target


class _Chunks(io.RawIOBase):
    """A write-only file that hands what is written to a generator, chunk by chunk."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks = []
        return out


def snapshot_tar_stream(*, snapshot: DatasetSnapshot, block: int = 1 << 20) -> Iterator[bytes]:
    """The snapshot folder as an uncompressed tar, streamed (never built in memory), deterministic
    (sorted names, mtime 0, no owner), under a top folder named after the snapshot."""
    root = Path(snapshot.path)
    prefix = root.name
    sink = _Chunks()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, size in snapshot_files(snapshot=snapshot):
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size, info.mtime, info.mode = size, 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info)  # header only; the body follows in blocks
            yield sink.take()
            with (root / name).open("rb") as fh:
                while data := fh.read(block):
                    tar.fileobj.write(data)
                    yield sink.take()
            remainder = size % tarfile.BLOCKSIZE
            if remainder:
                tar.fileobj.write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))
            tar.offset += size + ((tarfile.BLOCKSIZE - remainder) if remainder else 0)
            yield sink.take()
    yield sink.take()
