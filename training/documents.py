"""Documents an admin uploads for continued pretraining (the ``cpt`` recipe reads the folder).

``documents_upload`` is all or nothing: every file is checked the way the recipe will read it
(UTF-8 text; ``.jsonl`` one JSON object with a string ``text`` per line) before any is stored, and
an error names the file and, for JSONL, the line. Files are stored under
``selectors.documents_dir(project)`` as ``<name>-<sha256 prefix><suffix>``, so the same content
uploaded twice is stored once. Cleaning, deduplication across documents and PII screening happen
in the recipe (``training.recipes.data.clean_documents``), as they do for prompts on import.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from feedback.models import Project
from training.recipes.data import SnapshotError, read_documents
from training.selectors import documents_dir

SUFFIXES = (".txt", ".md", ".markdown", ".jsonl")
MAX_FILE_BYTES = 200 * 1024 * 1024


class DocumentUploadError(ValueError):
    """An upload that was refused; nothing was stored."""


@dataclass
class DocumentUploadReport:
    stored: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    documents: int = 0  # in the files stored now: a .jsonl line or a whole .txt/.md file each

    def as_dict(self) -> dict[str, object]:
        return {"stored": self.stored, "duplicates": self.duplicates, "documents": self.documents}


def _safe_name(name: str) -> tuple[str, str]:
    base = os.path.basename(name.replace("\\", "/"))
    stem, suffix = os.path.splitext(base)
    suffix = suffix.lower()
    if suffix not in SUFFIXES:
        raise DocumentUploadError(
            f"{base or name}: unsupported file type; upload {', '.join(SUFFIXES)} files"
        )
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-")[:80] or "document"
    return stem, suffix


def documents_upload(*, project: Project, files: list[tuple[str, bytes]]) -> DocumentUploadReport:
    """Check every ``(file name, content)`` and store them all in the project's documents folder,
    or store nothing and raise :class:`DocumentUploadError` naming the file (and line)."""
    if not files:
        raise DocumentUploadError("no files were uploaded")
    target = documents_dir(project)
    target.mkdir(parents=True, exist_ok=True)
    report = DocumentUploadReport()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".upload-{project.slug}-") as tmp:
        staged: list[tuple[Path, str, int]] = []
        for name, content in files:
            stem, suffix = _safe_name(name)
            if len(content) > MAX_FILE_BYTES:
                raise DocumentUploadError(f"{name}: larger than {MAX_FILE_BYTES // 2**20} MiB")
            if not content.strip():
                raise DocumentUploadError(f"{name}: the file is empty")
            stored_name = f"{stem}-{hashlib.sha256(content).hexdigest()[:12]}{suffix}"
            folder = Path(tmp) / str(len(staged))  # one folder per file: errors name just that file
            folder.mkdir()
            (folder / stored_name).write_bytes(content)
            try:
                docs, _ = read_documents(folder)
            except SnapshotError as exc:
                raise DocumentUploadError(str(exc).replace(str(folder / stored_name), name)) from None
            if not any(text.strip() for _, text in docs):
                raise DocumentUploadError(f"{name}: holds no document text")
            staged.append((folder / stored_name, name, len(docs)))
        for path, name, n_docs in staged:  # all checked: now store them
            dest = target / path.name
            if dest.exists():
                report.duplicates.append(name)
                continue
            shutil.move(str(path), dest)
            report.stored.append(dest.name)
            report.documents += n_docs
    return report
