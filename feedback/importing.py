"""Reading prompt and candidate files (JSONL, CSV, `datasets` save_to_disk folders).

Django-free and strict: the first malformed row raises ImportFileError naming the line (or row)
and the field, so the caller can refuse the whole file and write nothing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedback.pii import storable_text

ROLES = {"system", "user", "assistant"}


class ImportFileError(ValueError):
    """A file that cannot be imported. ``location`` is e.g. 'line 7' or 'row 12'."""

    def __init__(self, message: str, *, location: str | None = None, field: str | None = None):
        self.location = location
        self.field = field
        self.reason = message
        where = ", ".join(p for p in (location, f"field '{field}'" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(slots=True)
class PromptRow:
    location: str
    messages: list[dict[str, str]]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CandidateRow:
    location: str
    messages: list[dict[str, str]]
    text: str
    model: str | None
    finish_reason: str
    metadata: dict[str, Any] = field(default_factory=dict)


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "datasets"
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix in {".csv", ".tsv"}:
        return "csv"
    raise ImportFileError(f"cannot tell the format of {path.name}: use .jsonl, .csv or a datasets folder")


def _messages(record: dict[str, Any], location: str) -> list[dict[str, str]]:
    if "messages" in record and record["messages"] not in (None, ""):
        raw = record["messages"]
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ImportFileError(
                    f"not valid JSON ({exc.msg})", location=location, field="messages"
                ) from None
        if not isinstance(raw, list) or not raw:
            raise ImportFileError(
                "must be a non-empty list of {role, content}", location=location, field="messages"
            )
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise ImportFileError(
                    f"message {i} needs a string 'content'", location=location, field="messages"
                )
            if m.get("role") not in ROLES:
                raise ImportFileError(
                    f"message {i} has role {m.get('role')!r}; expected one of {sorted(ROLES)}",
                    location=location,
                    field="messages",
                )
            messages.append({"role": m["role"], "content": storable_text(m["content"])})
        if messages[-1]["role"] != "user":
            raise ImportFileError(
                "the last message must be from the user", location=location, field="messages"
            )
        if not any(m["content"].strip() for m in messages):
            raise ImportFileError("all messages are empty", location=location, field="messages")
        return messages
    prompt = record.get("prompt")
    if prompt is None:
        raise ImportFileError("missing: give 'prompt' or 'messages'", location=location, field="prompt")
    if not isinstance(prompt, str):
        raise ImportFileError("must be a string", location=location, field="prompt")
    if not prompt.strip():
        raise ImportFileError("is empty", location=location, field="prompt")
    return [{"role": "user", "content": storable_text(prompt)}]


def _metadata(record: dict[str, Any], location: str, known: set[str]) -> dict[str, Any]:
    meta = record.get("metadata") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError as exc:
            raise ImportFileError(
                f"not valid JSON ({exc.msg})", location=location, field="metadata"
            ) from None
    if not isinstance(meta, dict):
        raise ImportFileError("must be an object", location=location, field="metadata")
    extra = {k: v for k, v in record.items() if k not in known and v not in (None, "")}
    return {**extra, **meta}


def iter_records(path: Path, file_format: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) for every row of the file; JSON and CSV syntax errors name the line."""
    file_format = file_format or detect_format(path)
    if file_format == "jsonl":
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                location = f"line {number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ImportFileError(
                        f"not valid JSON ({exc.msg} at column {exc.colno})", location=location
                    ) from None
                if not isinstance(record, dict):
                    raise ImportFileError("each line must be a JSON object", location=location)
                yield location, record
    elif file_format == "csv":
        text = path.read_text(encoding="utf-8-sig")
        dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
        reader = csv.DictReader(io.StringIO(text), dialect=dialect)
        if not reader.fieldnames:
            raise ImportFileError("the CSV file has no header row", location="line 1")
        for record in reader:
            location = f"line {reader.line_num}"
            if None in record:
                raise ImportFileError(
                    f"{len(record[None]) + len(reader.fieldnames)} columns, header has "  # type: ignore[arg-type]
                    f"{len(reader.fieldnames)}",
                    location=location,
                )
            yield location, dict(record)
    elif file_format == "datasets":
        try:
            from datasets import load_from_disk
        except ImportError as exc:  # pragma: no cover - datasets is a core dependency
            raise ImportFileError(f"reading a datasets folder needs `datasets` ({exc})") from exc
        try:
            ds = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise ImportFileError(f"{path} is not a datasets save_to_disk folder ({exc})") from None
        if hasattr(ds, "keys"):  # a DatasetDict: take every split, in order
            splits = list(ds.keys())
            for split in splits:
                for i, record in enumerate(ds[split]):
                    yield f"{split} row {i}", dict(record)
        else:
            for i, record in enumerate(ds):
                yield f"row {i}", dict(record)
    else:
        raise ImportFileError(f"unknown format {file_format!r}: jsonl, csv or datasets")


PROMPT_FIELDS = {"prompt", "messages", "metadata"}
CANDIDATE_FIELDS = PROMPT_FIELDS | {"response", "completion", "model", "finish_reason"}


def read_prompts(path: Path, file_format: str | None = None) -> list[PromptRow]:
    rows = []
    for location, record in iter_records(path, file_format):
        rows.append(
            PromptRow(
                location=location,
                messages=_messages(record, location),
                metadata=_metadata(record, location, PROMPT_FIELDS),
            )
        )
    if not rows:
        raise ImportFileError(f"{path.name} holds no rows")
    return rows


def read_candidates(path: Path, file_format: str | None = None) -> list[CandidateRow]:
    rows = []
    for location, record in iter_records(path, file_format):
        text = record.get("response", record.get("completion"))
        if isinstance(text, list) and text and isinstance(text[-1], dict):
            text = text[-1].get("content")
        if not isinstance(text, str):
            raise ImportFileError(
                "missing or not a string: give 'response' or 'completion'",
                location=location,
                field="response",
            )
        model = record.get("model") or None
        if model is not None and not isinstance(model, str):
            raise ImportFileError("must be a string", location=location, field="model")
        finish = record.get("finish_reason") or "stop"
        if finish not in {"stop", "length"}:
            raise ImportFileError(
                f"{finish!r} is not 'stop' or 'length'", location=location, field="finish_reason"
            )
        rows.append(
            CandidateRow(
                location=location,
                messages=_messages(record, location),
                text=storable_text(text),
                model=model,
                finish_reason=finish,
                metadata=_metadata(record, location, CANDIDATE_FIELDS),
            )
        )
    if not rows:
        raise ImportFileError(f"{path.name} holds no rows")
    return rows


def render_messages(messages: list[dict[str, str]]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)
