"""Snapshot writes: create (freeze the filters), preview (count), write (stream the files), push.

``snapshot_create`` freezes what the filters mean *now* (the last annotation id, the annotators
flagged now); ``snapshot_write`` streams the rows into a temporary folder, hashes them, and moves
the folder into place. The first write fixes the snapshot's content hash; every later write of
the same snapshot must produce the same hash (and so the same bytes) or it is refused and the
files already there are left alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from feedback.exports.card import dataset_card, manifest_bytes
from feedback.exports.reading import bounded_reads, cyclic_gc_paused
from feedback.exports.rows import ExportStats, has_known_margins, iter_rows, plan_columns
from feedback.exports.spec import ExportSpec, ExportSpecError
from feedback.exports.writers import SnapshotSinks, write_datasets_metadata
from feedback.models import Annotation, DatasetSnapshot, Membership, Project, SnapshotStatus

DEFAULT_FORMATS = ("jsonl", "parquet", "hf")


class SnapshotChangedError(RuntimeError):
    """Writing a snapshot again gave a different content hash: its source rows were changed."""


@dataclass
class Preview:
    row_counts: dict[str, int]
    stats: dict[str, Any]
    columns: list[str]
    frozen: dict[str, Any] = field(default_factory=dict)


@dataclass
class WriteResult:
    snapshot: DatasetSnapshot
    path: Path
    content_hash: str
    row_counts: dict[str, int]
    stats: dict[str, Any]
    file_sizes: dict[str, int]


def _as_spec(spec: ExportSpec | dict[str, Any]) -> ExportSpec:
    return spec if isinstance(spec, ExportSpec) else ExportSpec.from_dict(dict(spec))


def freeze_filters(spec: ExportSpec) -> dict[str, Any]:
    """What the filters resolve to now: the annotation cut-off and the annotators flagged now."""
    last = Annotation.objects.filter(item__project_id__in=spec.project_ids).aggregate(m=Max("id"))["m"]
    excluded: dict[str, list[int]] = {}
    for project_id, user_id in (
        Membership.objects.filter(project_id__in=spec.project_ids, flagged=True)
        .order_by("project_id", "user_id")
        .values_list("project_id", "user_id")
    ):
        excluded.setdefault(str(project_id), []).append(user_id)
    return {"annotation_id_max": last, "excluded_annotators": excluded}


def _check_projects(spec: ExportSpec) -> list[Project]:
    projects = list(Project.objects.filter(id__in=spec.project_ids).order_by("id"))
    missing = sorted(set(spec.project_ids) - {p.id for p in projects})
    if missing:
        raise ExportSpecError(f"no project with id {missing}", field="project_ids")
    return projects


def _check_split(seed: int, test_fraction: float) -> tuple[int, float]:
    try:
        seed, test_fraction = int(seed), float(test_fraction)
    except (TypeError, ValueError):
        raise ExportSpecError("seed must be an integer and test_fraction a number") from None
    if not 0.0 <= test_fraction < 1.0:
        raise ExportSpecError("must lie in [0, 1)", field="test_fraction")
    return seed, test_fraction


@transaction.atomic
def snapshot_create(
    *,
    name: str,
    spec: ExportSpec | dict[str, Any],
    seed: int = 0,
    test_fraction: float = 0.1,
    created_by: AbstractBaseUser | None = None,
) -> DatasetSnapshot:
    """A draft snapshot with its filters frozen; write it with :func:`snapshot_write`."""
    spec = _as_spec(spec)
    seed, test_fraction = _check_split(seed, test_fraction)
    name = (name or "").strip()
    if not name:
        raise ExportSpecError("give the snapshot a name", field="name")
    projects = _check_projects(spec)
    snapshot = DatasetSnapshot.objects.create(
        name=name[:200],
        kind=spec.kind,
        filters=spec.to_dict(),
        frozen=freeze_filters(spec),
        seed=seed,
        test_fraction=test_fraction,
        pseudonym_salt=secrets.token_hex(16),
        status=SnapshotStatus.DRAFT,
        created_by=created_by if created_by is not None and created_by.is_authenticated else None,
    )
    snapshot.projects.set(projects)
    return snapshot


def snapshot_preview(
    *,
    spec: ExportSpec | dict[str, Any],
    seed: int = 0,
    test_fraction: float = 0.1,
    frozen: dict[str, Any] | None = None,
) -> Preview:
    """Row counts and what would be dropped, without writing (reads every selected row once)."""
    spec = _as_spec(spec)
    seed, test_fraction = _check_split(seed, test_fraction)
    _check_projects(spec)
    frozen = frozen if frozen is not None else freeze_filters(spec)
    stats = ExportStats()
    has_margin = has_known_margins(spec, frozen)
    with bounded_reads(), cyclic_gc_paused():
        for _ in iter_rows(
            spec, frozen, seed=seed, test_fraction=test_fraction, salt="", stats=stats, has_margin=has_margin
        ):
            pass
    columns = [name for name, _ in plan_columns(spec, has_margin=has_margin)]
    return Preview(row_counts=dict(stats.rows), stats=stats.as_dict(), columns=columns, frozen=frozen)


def default_folder(snapshot: DatasetSnapshot) -> Path:
    return Path(settings.EXPORTS_DIR) / f"snapshot-{snapshot.pk}-{slugify(snapshot.name)[:60] or 'data'}"


def snapshot_spec(snapshot: DatasetSnapshot) -> ExportSpec:
    return ExportSpec.from_dict(snapshot.filters)


def snapshot_write(
    *,
    snapshot: DatasetSnapshot,
    formats: tuple[str, ...] | list[str] = DEFAULT_FORMATS,
    out_dir: Path | str | None = None,
    chunk_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> WriteResult:
    """Stream the snapshot's rows into its files; fix (first write) or check (later writes) its hash.

    ``out_dir`` writes a copy elsewhere (the CLI's ``--out``); the snapshot's own folder is
    ``EXPORTS_DIR/snapshot-<id>-<name>`` and is what the UI and API serve.
    """
    spec = snapshot_spec(snapshot)
    formats = tuple(dict.fromkeys(formats))
    final = Path(out_dir) if out_dir is not None else default_folder(snapshot)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    stats = ExportStats()
    try:
        has_margin = has_known_margins(spec, snapshot.frozen)
        columns = plan_columns(spec, has_margin=has_margin)
        sinks = SnapshotSinks(tmp, columns, formats)
        try:
            with bounded_reads(), cyclic_gc_paused():
                for is_test, values in iter_rows(
                    spec,
                    snapshot.frozen,
                    seed=snapshot.seed,
                    test_fraction=snapshot.test_fraction,
                    salt=snapshot.pseudonym_salt,
                    stats=stats,
                    has_margin=has_margin,
                    chunk_size=chunk_size,
                    progress=progress,
                ):
                    sinks.write(is_test, values)
        finally:
            sinks.close()
        content_hash = sinks.content_hash()
        # the stored hash, read now (this object may predate a write made elsewhere meanwhile)
        fixed = (
            DatasetSnapshot.objects.filter(pk=snapshot.pk).values_list("content_hash", flat=True).first()
            or snapshot.content_hash
        )
        if fixed and fixed != content_hash:
            raise SnapshotChangedError(
                f"snapshot {snapshot.pk} was written with hash {fixed} but its rows now hash "
                f"to {content_hash}: annotations it read were changed or deleted. The files already written "
                "are kept; make a new snapshot to export the current data."
            )
        row_counts = dict(stats.rows)
        files = ["README.md", "manifest.json"]
        files += [
            f"{split}.{ext}" for ext in ("jsonl", "parquet") if ext in formats for split in ("train", "test")
        ]
        files += ["hf/"] if "hf" in formats else []
        manifest = {
            "snapshot_id": str(snapshot.pk),
            "name": snapshot.name,
            "kind": spec.kind,
            "style": spec.style,
            "content_hash": content_hash,
            "row_counts": row_counts,
            "columns": [name for name, _ in columns],
            "filters": {**spec.to_dict(), "annotation_id_max": snapshot.frozen.get("annotation_id_max")},
            "seed": snapshot.seed,
            "test_fraction": snapshot.test_fraction,
            "stats": stats.as_dict(),
            "files": files,
        }
        card = dataset_card(
            name=snapshot.name,
            snapshot_id=str(snapshot.pk),
            spec=spec,
            manifest=manifest,
            stats=stats.as_dict(),
            files=files,
        )
        (tmp / "README.md").write_bytes(card)
        if "hf" in formats:
            write_datasets_metadata(
                tmp / "hf",
                columns,
                content_hash=content_hash,
                license=spec.license,
                description=f"Arbiter snapshot {snapshot.pk} ({spec.kind}): {snapshot.name}",
            )
            (tmp / "hf" / "README.md").write_bytes(card)
        (tmp / "manifest.json").write_bytes(manifest_bytes(manifest))
        sizes = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    own_folder = out_dir is None
    updates: dict[str, Any] = {
        "status": SnapshotStatus.WRITTEN,
        "content_hash": content_hash,
        "row_counts": row_counts,
        "stats": stats.as_dict(),
        "error": "",
    }
    if own_folder or not snapshot.path:
        updates.update(path=str(final), file_sizes=sizes, written_at=timezone.now())
    # The hash is set once: the update only matches a row with no hash yet or the same hash.
    matched = DatasetSnapshot.objects.filter(pk=snapshot.pk, content_hash__in=["", content_hash]).update(
        **updates
    )
    if not matched:
        raise SnapshotChangedError(f"snapshot {snapshot.pk} was written concurrently with another hash")
    for key, value in updates.items():
        setattr(snapshot, key, value)
    return WriteResult(snapshot, final, content_hash, row_counts, stats.as_dict(), sizes)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` (same filesystem), never leaving a half-written folder there."""
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def snapshot_mark_failed(*, snapshot: DatasetSnapshot, error: str) -> None:
    DatasetSnapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.DRAFT).update(
        status=SnapshotStatus.FAILED, error=error[-4000:]
    )


def snapshot_push_to_hub(
    *, snapshot: DatasetSnapshot, repo_id: str, private: bool = True, token: str | None = None
) -> str:
    """Upload the written ``datasets`` folder to the Hugging Face Hub; needs a configured token."""
    token = token or os.environ.get("HF_TOKEN") or getattr(settings, "HF_TOKEN", None)
    if not token:
        raise ExportSpecError("no Hugging Face token configured (set HF_TOKEN)", field="push_to_hub")
    folder = Path(snapshot.path) / "hf"
    if snapshot.status != SnapshotStatus.WRITTEN or not folder.is_dir():
        raise ExportSpecError("write the snapshot with the 'hf' format first", field="push_to_hub")
    from datasets import load_from_disk
    from huggingface_hub import HfApi

    # The dataset card (counts, filters, agreement, licence) goes up first: push_to_hub then
    # merges its own metadata (splits, features) into the README it finds in the repository.
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_file(
        path_or_fileobj=str(Path(snapshot.path) / "README.md"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=f"Dataset card of snapshot {snapshot.pk} ({snapshot.content_hash[:12]})",
    )
    dataset = load_from_disk(str(folder))
    dataset.push_to_hub(repo_id, private=private, token=token)
    return f"https://huggingface.co/datasets/{repo_id}"
