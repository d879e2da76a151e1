"""Row sinks: canonical JSONL (which defines the content hash), Parquet and a ``datasets`` folder.

Every sink takes rows one at a time and holds a few thousand at most (the Parquet/Arrow sinks:
three blocks of 4,096 lines, parsed and written in order on one helper thread); nothing in a file
depends on the time or the machine it was written on, so writing the same rows again gives the
same bytes. The content hash is the SHA-256 of the canonical JSONL bytes of each split, whether
or not the JSONL files themselves are kept.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Callable
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from feedback.exports.rows import ASSISTANT, BOOL, CANDIDATES, FLOAT, INT, MESSAGES, STRING, Column

SPLITS = ("train", "test")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_str = encode_basestring  # the C encoder of a JSON string (ensure_ascii=False)


def _float(value: Any) -> str:
    if value is None:
        return "null"
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot write {value} to JSON")
    return repr(value)


def _formatters(columns: list[Column]) -> list[Callable[[Any], str]]:
    """One function per column turning a value into its canonical JSON text."""
    out: list[Callable[[Any], str]] = []
    for _, kind in columns:
        if kind == ASSISTANT:
            out.append(lambda v: '[{"role":"assistant","content":' + _str(v) + "}]")
        elif kind == STRING:
            out.append(lambda v: "null" if v is None else _str(v))
        elif kind == FLOAT:
            out.append(_float)
        elif kind == BOOL:
            out.append(lambda v: "null" if v is None else ("true" if v else "false"))
        elif kind == INT:
            out.append(lambda v: "null" if v is None else str(int(v)))
        else:  # MESSAGES, CANDIDATES
            out.append(_encode)
    return out


def _cached(fmt: Callable[[Any], str]) -> Callable[[Any], str]:
    """Chat messages (the prompt) are shared by consecutive rows: encode each object once."""
    last: list[Any] = [None, ""]

    def f(value: Any) -> str:
        if value is not last[0]:
            last[0], last[1] = value, fmt(value)
        return last[1]

    return f


def _line_function(columns: list[Column]) -> Callable[[tuple[Any, ...]], str]:
    """A function building one canonical JSON line from a row tuple, specialised to the columns."""
    namespace: dict[str, Any] = {}
    parts = []
    for i, ((name, kind), fmt) in enumerate(zip(columns, _formatters(columns), strict=True)):
        namespace[f"K{i}"] = ("{" if i == 0 else ",") + json.dumps(name) + ":"
        namespace[f"F{i}"] = _cached(fmt) if kind == MESSAGES else fmt
        parts.append(f"K{i}, F{i}(v[{i}])")
    source = f"def line(v):\n    return ''.join(({', '.join(parts)}, '}}\\n'))\n"
    exec(compile(source, "<jsonl line>", "exec"), namespace)
    return namespace["line"]


class JsonlSink:
    """Canonical JSONL for one split: fixed key order, compact separators, UTF-8, ``\\n`` endings."""

    def __init__(self, path: Path | None, columns: list[Column]):
        self.path = path
        self.columns = columns
        self.hash = hashlib.sha256()
        self.rows = 0
        self.bytes = 0
        self._fh = path.open("wb", buffering=1 << 20) if path is not None else None
        self._line = _line_function(columns)

        self._pending: list[str] = []

    def write(self, values: tuple[Any, ...]) -> str:
        """Add one row; returns its line (the Arrow sinks parse the same text)."""
        line = self._line(values)
        self._pending.append(line)
        if len(self._pending) >= 2048:
            self._flush()
        return line

    def _flush(self) -> None:
        """Encode, hash and write the pending lines as one block (the hash of a concatenation is the
        hash of its parts fed in order, so blocks change nothing in the result)."""
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8")
        self.rows += len(self._pending)
        self._pending = []
        self.hash.update(data)
        self.bytes += len(data)
        if self._fh is not None:
            self._fh.write(data)

    def close(self) -> None:
        self._flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def arrow_schema(columns: list[Column]):
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    candidate = pa.struct(
        [
            ("id", pa.int64()),
            ("text", pa.string()),
            ("model_version_id", pa.int64()),
            ("finish_reason", pa.string()),
        ]
    )
    types = {
        MESSAGES: pa.list_(message),
        ASSISTANT: pa.list_(message),
        STRING: pa.string(),
        FLOAT: pa.float64(),
        BOOL: pa.bool_(),
        INT: pa.int64(),
        CANDIDATES: pa.list_(candidate),
    }
    return pa.schema([(name, types[kind]) for name, kind in columns])


class ArrowSplitSink:
    """Parquet and/or Arrow-stream (``datasets``) files for one split, built from the canonical JSONL lines.

    Every ``batch_rows`` lines are parsed by Arrow's C++ JSON reader against the fixed schema and
    written as one row group / record batch, on a helper thread: parsing and compression run
    without the GIL, beside the Python that formats the next rows. Batches are written in order
    (one worker), and at most ``max_pending`` wait, which bounds memory.
    """

    def __init__(
        self,
        columns: list[Column],
        *,
        parquet_path: Path | None,
        arrow_path: Path | None,
        pool: Any,
        batch_rows: int = 4096,
        max_pending: int = 2,
    ):
        import pyarrow as pa
        import pyarrow.json as pj
        import pyarrow.parquet as pq

        self.schema = arrow_schema(columns)
        self.batch_rows, self.max_pending, self.pool = batch_rows, max_pending, pool
        self._lines: list[str] = []
        self._pending: deque = deque()
        self._parse_options = pj.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="error")
        self._parquet = (
            pq.ParquetWriter(
                str(parquet_path),
                self.schema,
                compression="zstd",
                write_statistics=False,  # min/max of long texts cost ~0.5 µs a row and help no trainer
                use_dictionary=False,
            )
            if parquet_path is not None
            else None
        )
        self._arrow = None
        self._arrow_fh = None
        if arrow_path is not None:
            meta = {
                "huggingface": json.dumps({"info": {"features": datasets_features(columns)}}, sort_keys=True)
            }
            self._arrow_fh = pa.OSFile(str(arrow_path), "wb")
            self._arrow = pa.ipc.new_stream(self._arrow_fh, self.schema.with_metadata(meta))

    def write_line(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8")
        self._lines = []
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        self._pending.append(self.pool.submit(self._write_block, data))

    def _write_block(self, data: bytes) -> None:
        import pyarrow as pa
        import pyarrow.json as pj

        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=self._parse_options,
        )
        batch = table.combine_chunks().to_batches(max_chunksize=len(data))[0] if table.num_rows else None
        if batch is None:
            return
        if self._parquet is not None:
            self._parquet.write_batch(batch)
        if self._arrow is not None:
            self._arrow.write_batch(batch)

    def close(self) -> None:
        self._flush()
        while self._pending:
            self._pending.popleft().result()
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._arrow is not None:
            self._arrow.close()
            self._arrow_fh.close()
            self._arrow = None


def _value(dtype: str) -> dict[str, str]:
    return {"dtype": dtype, "_type": "Value"}


def datasets_features(columns: list[Column]) -> dict[str, Any]:
    """``datasets.Features(...).to_dict()`` of the snapshot's columns, without importing ``datasets``
    (~65 MB of memory for one dict; a test checks it against the library's own)."""
    message = {"feature": {"role": _value("string"), "content": _value("string")}, "_type": "List"}
    candidate = {
        "feature": {
            "id": _value("int64"),
            "text": _value("string"),
            "model_version_id": _value("int64"),
            "finish_reason": _value("string"),
        },
        "_type": "List",
    }
    kinds = {
        MESSAGES: message,
        ASSISTANT: message,
        CANDIDATES: candidate,
        STRING: _value("string"),
        FLOAT: _value("float64"),
        BOOL: _value("bool"),
        INT: _value("int64"),
    }
    return {name: kinds[kind] for name, kind in columns}


def write_datasets_metadata(
    folder: Path, columns: list[Column], *, content_hash: str, license: str, description: str
) -> None:
    """The JSON files ``datasets.load_from_disk`` reads beside the Arrow files (a DatasetDict)."""
    features = datasets_features(columns)
    for split in SPLITS:
        info = {
            "citation": "",
            "description": description,
            "features": features,
            "homepage": "",
            "license": license,
        }
        (folder / split / "dataset_info.json").write_text(
            json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        state = {
            "_data_files": [{"filename": "data-00000-of-00001.arrow"}],
            "_fingerprint": hashlib.sha256(f"{content_hash}:{split}".encode()).hexdigest()[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": split,
        }
        (folder / split / "state.json").write_text(
            json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(SPLITS)}) + "\n", encoding="utf-8")


class SnapshotSinks:
    """All the files of one snapshot, for both splits."""

    FORMATS = ("jsonl", "parquet", "hf")

    def __init__(self, folder: Path, columns: list[Column], formats: tuple[str, ...]):
        bad = [f for f in formats if f not in self.FORMATS]
        if bad:
            raise ValueError(f"unknown format(s) {bad}: choose from {list(self.FORMATS)}")
        self.folder, self.columns, self.formats = folder, columns, formats
        self.jsonl = {
            split: JsonlSink(folder / f"{split}.jsonl" if "jsonl" in formats else None, columns)
            for split in SPLITS
        }
        self.arrow: dict[str, ArrowSplitSink] = {}
        self._pool = None
        if "parquet" in formats or "hf" in formats:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-arrow")
            for split in SPLITS:
                arrow_path = None
                if "hf" in formats:
                    (folder / "hf" / split).mkdir(parents=True, exist_ok=True)
                    arrow_path = folder / "hf" / split / "data-00000-of-00001.arrow"
                self.arrow[split] = ArrowSplitSink(
                    columns,
                    parquet_path=folder / f"{split}.parquet" if "parquet" in formats else None,
                    arrow_path=arrow_path,
                    pool=self._pool,
                )

    def write(self, is_test: bool, values: tuple[Any, ...]) -> None:
        split = "test" if is_test else "train"
        line = self.jsonl[split].write(values)
        if self.arrow:
            self.arrow[split].write_line(line)

    def close(self) -> None:
        try:
            for sink in self.jsonl.values():
                sink.close()
            for sink in self.arrow.values():
                sink.close()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for split in SPLITS:
            h.update(f"{split}.jsonl\n".encode())
            h.update(self.jsonl[split].hash.hexdigest().encode())
            h.update(b"\n")
        return h.hexdigest()
