"""Reading snapshot folders (the exports helper's file contract) and domain documents.

Snapshot folder::

    manifest.json  {"snapshot_id", "kind", "content_hash", "row_counts": {"train", "test"}, "filters"}
    train.jsonl    one TRL conversational row per line
    test.jsonl     same format (may be absent or empty)

Recipes select the columns they need and ignore the rest. Rows whose candidate hit the token limit
(``truncated`` and friends) are dropped by default and counted. Every malformed line is reported
with its file and line number, and a snapshot whose files disagree with its manifest is refused.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRUNCATION_FLAGS = ("truncated", "chosen_truncated", "rejected_truncated", "completion_truncated")

#: Columns each snapshot kind must provide, and whether each is a message list.
KIND_COLUMNS: dict[str, dict[str, str]] = {
    "preference": {"prompt": "messages", "chosen": "messages", "rejected": "messages"},
    "unpaired": {"prompt": "messages", "completion": "messages", "label": "bool"},
    "sft": {"prompt": "messages", "completion": "messages"},
}
OPTIONAL_COLUMNS: dict[str, dict[str, str]] = {
    "preference": {"margin": "number", "chosen_truncated": "bool", "rejected_truncated": "bool"},
    "unpaired": {"completion_truncated": "bool"},
}


class SnapshotError(ValueError):
    """A snapshot folder is missing, malformed, or does not fit the recipe."""


@dataclass
class Snapshot:
    path: Path
    manifest: dict[str, Any]
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    dropped_truncated: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind"))

    @property
    def snapshot_id(self) -> str:
        return str(self.manifest.get("snapshot_id", ""))

    @property
    def content_hash(self) -> str:
        return str(self.manifest.get("content_hash", ""))

    def describe(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "kind": self.kind,
            "content_hash": self.content_hash,
            "path": str(self.path),
            "row_counts": self.manifest.get("row_counts", {}),
            "filters": self.manifest.get("filters", {}),
            "rows_used": {"train": len(self.train), "test": len(self.test)},
            "dropped_truncated": self.dropped_truncated,
        }


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    mf = path / "manifest.json"
    if not path.is_dir():
        raise SnapshotError(f"snapshot folder {path} does not exist")
    if not mf.exists():
        raise SnapshotError(f"{mf} is missing: not a snapshot folder (or an export still in progress)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{mf}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(manifest, dict):
        raise SnapshotError(f"{mf}: expected a JSON object")
    for key in ("snapshot_id", "kind", "content_hash"):
        if key not in manifest:
            raise SnapshotError(f"{mf}: missing key {key!r}")
    return manifest


def _check_messages(value: Any, where: str, column: str) -> None:
    if not isinstance(value, list) or not value:
        raise SnapshotError(f"{where}: column {column!r} must be a non-empty list of messages")
    for i, msg in enumerate(value):
        if (
            not isinstance(msg, dict)
            or not isinstance(msg.get("role"), str)
            or not isinstance(msg.get("content"), str)
        ):
            raise SnapshotError(
                f"{where}: column {column!r} message {i} must be {{'role': str, 'content': str}}"
            )


def _check_value(value: Any, kind: str, where: str, column: str) -> None:
    if kind == "messages":
        _check_messages(value, where, column)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise SnapshotError(f"{where}: column {column!r} must be true or false, got {value!r}")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SnapshotError(f"{where}: column {column!r} must be a number, got {value!r}")


def is_cut_off(row: dict[str, Any], mode: bool | str) -> bool:
    """Whether ``drop_truncated`` (True, False or "chosen") drops this row.

    "chosen" drops a row only when the answer it would train as *good* was cut off: the chosen
    side of a pair, a thumbs-up completion, an SFT completion (or a row flagged 'truncated').
    """
    if mode is True:
        return any(bool(row.get(flag)) for flag in TRUNCATION_FLAGS)
    if mode == "chosen":
        if row.get("truncated") or row.get("chosen_truncated"):
            return True
        return bool(row.get("completion_truncated")) and row.get("label", True) is not False
    return False


def before_last_end(ids: list[int], end_id: int) -> list[int]:
    """``ids`` (a tokenized completion) ended before its last ``end_id`` token: the end-of-turn token
    chat formatting appends, and what follows it. Unchanged when there is none."""
    if end_id not in ids:
        return ids
    return ids[: len(ids) - 1 - ids[::-1].index(end_id)]


def read_rows(
    file: Path, kind: str, *, drop_truncated: bool | str, keep: tuple[str, ...] | None = None
) -> tuple[list[dict[str, Any]], int, int]:
    """Read one JSONL split. Returns ``(rows, lines_read, dropped_truncated)``."""
    required = KIND_COLUMNS[kind]
    optional = OPTIONAL_COLUMNS.get(kind, {})
    columns = tuple(required) + tuple(c for c in optional if keep is None or c in keep)
    rows: list[dict[str, Any]] = []
    lines = dropped = 0
    with file.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            lines += 1
            where = f"{file}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SnapshotError(f"{where}: invalid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise SnapshotError(f"{where}: expected a JSON object")
            missing = [c for c in required if c not in row]
            if missing:
                raise SnapshotError(f"{where}: missing column(s) {missing} for a {kind!r} snapshot")
            for column, ckind in required.items():
                _check_value(row[column], ckind, where, column)
            for column in optional:
                if column in row and row[column] is not None:
                    _check_value(row[column], optional[column], where, column)
            if is_cut_off(row, drop_truncated):
                dropped += 1
                continue
            rows.append({c: row[c] for c in columns if c in row and row[c] is not None})
    return rows, lines, dropped


def load_snapshot(
    path: str | Path,
    *,
    kinds: tuple[str, ...],
    drop_truncated: bool | str = True,
    keep_optional: tuple[str, ...] | None = None,
    max_train_rows: int | None = None,
    seed: int = 0,
) -> Snapshot:
    """Load and check a snapshot folder for a recipe that reads ``kinds``."""
    path = Path(path)
    manifest = read_manifest(path)
    kind = manifest["kind"]
    if kind not in kinds:
        raise SnapshotError(
            f"{path}/manifest.json: kind {kind!r} cannot be used here (this method reads {list(kinds)})"
        )
    if kind not in KIND_COLUMNS:
        raise SnapshotError(f"{path}/manifest.json: unknown kind {kind!r}")
    counts = manifest.get("row_counts") or {}
    splits: dict[str, list[dict[str, Any]]] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "test"):
        file = path / f"{split}.jsonl"
        if not file.exists():
            if split == "train" or counts.get(split):
                raise SnapshotError(f"{file} is missing")
            splits[split], dropped[split] = [], 0
            continue
        rows, lines, n_dropped = read_rows(file, kind, drop_truncated=drop_truncated, keep=keep_optional)
        if split in counts and int(counts[split]) != lines:
            raise SnapshotError(
                f"{file}: holds {lines} rows but manifest.json row_counts says {counts[split]} "
                "(incomplete or altered export)"
            )
        splits[split], dropped[split] = rows, n_dropped
    if not splits["train"]:
        raise SnapshotError(
            f"{path}/train.jsonl: no usable training rows"
            + (f" ({dropped['train']} dropped as truncated)" if dropped.get("train") else "")
        )
    train = splits["train"]
    if max_train_rows is not None and len(train) > max_train_rows:
        train = random.Random(seed).sample(train, max_train_rows)
    return Snapshot(path, manifest, train, splits["test"], dropped)


def prompts_of(rows: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    """Distinct prompts (message lists), first-seen order."""
    seen: set[str] = set()
    out = []
    for row in rows:
        key = json.dumps(row["prompt"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(row["prompt"])
    return out


# --- documents for continued pretraining ------------------------------------------------------
DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown", ".jsonl")


@dataclass
class DocumentReport:
    files: int = 0
    documents: int = 0
    kept: int = 0
    duplicates: int = 0
    too_short: int = 0
    pii_redacted: int = 0
    pii_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _document_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SnapshotError(f"documents path {path} does not exist")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES and p.name != "manifest.json"
    )
    if not files:
        raise SnapshotError(f"{path}: no documents ({', '.join(DOCUMENT_SUFFIXES)}) found")
    return files


def read_documents(path: str | Path, *, text_field: str = "text") -> tuple[list[tuple[str, str]], int]:
    """``[(where, text)]`` from a file or folder: .txt/.md are one document each, .jsonl one per line."""
    out: list[tuple[str, str]] = []
    files = _document_files(Path(path))
    for file in files:
        if file.suffix.lower() == ".jsonl":
            with file.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    where = f"{file}:{lineno}"
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise SnapshotError(f"{where}: invalid JSON: {exc.msg}") from None
                    if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                        raise SnapshotError(f"{where}: expected an object with a string {text_field!r}")
                    out.append((where, row[text_field]))
        else:
            try:
                out.append((str(file), file.read_text(encoding="utf-8")))
            except UnicodeDecodeError as exc:
                raise SnapshotError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    return out, len(files)


def clean_documents(
    docs: list[tuple[str, str]], *, min_chars: int, pii: str, report: DocumentReport
) -> list[str]:
    """Clean, deduplicate and PII-screen documents, like prompts are on import.

    Whitespace is tidied (line structure kept for markdown), exact duplicates after normalisation
    (NFKC, case-folded, whitespace collapsed) are dropped, and PII is redacted with placeholders
    (``pii='redact'``), or the document dropped (``'drop'``), or left (``'keep'``).
    """
    from feedback.pii import find_pii, normalise_text, redact

    seen: set[str] = set()
    kept: list[str] = []
    for _, text in docs:
        report.documents += 1
        lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
        cleaned = "\n".join(lines)
        while "\n\n\n" in cleaned:
            cleaned = cleaned.replace("\n\n\n", "\n\n")
        cleaned = cleaned.strip()
        if len(cleaned) < min_chars:
            report.too_short += 1
            continue
        key = hashlib.sha256(normalise_text(cleaned).encode()).hexdigest()
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        if pii != "keep":
            matches = find_pii(cleaned)
            if matches:
                if pii == "drop":
                    report.pii_dropped += 1
                    continue
                cleaned = redact(cleaned, matches)
                report.pii_redacted += 1
        kept.append(cleaned)
    report.kept = len(kept)
    return kept


def pack_documents(docs: list[str], tokenizer, block_size: int) -> list[list[int]]:
    """Tokenise documents (each ended by EOS), concatenate and cut into full ``block_size`` blocks.

    The tail shorter than a block is kept as a last, shorter block only if it is at least half a
    block (so a tiny corpus still trains), otherwise dropped.
    """
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for doc in docs:
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        stream.append(eos)
    blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
    if blocks and len(blocks[-1]) < block_size and len(blocks[-1]) < block_size // 2:
        blocks.pop()
    return blocks
