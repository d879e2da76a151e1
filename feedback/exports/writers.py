"""Row sinks: canonical JSONL (which defines the content hash), Parquet and a ``datasets`` folder.

Every sink takes rows one at a time and holds at most one record batch; nothing in a file
depends on the time or the machine it was written on, so writing the same rows again gives the
same bytes. The content hash is the SHA-256 of the canonical JSONL bytes of each split, whether
or not the JSONL files themselves are kept.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from feedback.exports.rows import BOOL, CANDIDATES, FLOAT, INT, MESSAGES, STRING, Column

SPLITS = ("train", "test")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class JsonlSink:
    """Canonical JSONL for one split: fixed key order, compact separators, UTF-8, ``\\n`` endings."""

    def __init__(self, path: Path | None, columns: list[Column]):
        self.path = path
        self.columns = columns
        self.hash = hashlib.sha256()
        self.rows = 0
        self.bytes = 0
        self._fh = path.open("wb", buffering=1 << 20) if path is not None else None
        self._keys = ['{"' + columns[0][0] + '":'] + [',"' + name + '":' for name, _ in columns[1:]]
        self._first_obj: Any = None
        self._first_frag = ""

    def write(self, values: tuple[Any, ...]) -> None:
        parts = []
        for i, (key, value) in enumerate(zip(self._keys, values, strict=True)):
            if i == 0 and value is self._first_obj:  # the prompt, shared by consecutive rows
                frag = self._first_frag
            else:
                frag = _encode(value)
                if i == 0:
                    self._first_obj, self._first_frag = value, frag
            parts.append(key)
            parts.append(frag)
        parts.append("}\n")
        data = "".join(parts).encode("utf-8")
        self.hash.update(data)
        self.rows += 1
        self.bytes += len(data)
        if self._fh is not None:
            self._fh.write(data)

    def close(self) -> None:
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
        STRING: pa.string(),
        FLOAT: pa.float64(),
        BOOL: pa.bool_(),
        INT: pa.int64(),
        CANDIDATES: pa.list_(candidate),
    }
    return pa.schema([(name, types[kind]) for name, kind in columns])


class BatchBuilder:
    """Accumulates rows column by column and builds one Arrow record batch at a time."""

    def __init__(self, columns: list[Column], schema):
        self.columns = columns
        self.schema = schema
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self._cols: list[Any] = []
        for _, kind in self.columns:
            if kind == MESSAGES:
                self._cols.append(([0], [], []))  # offsets, roles, contents
            elif kind == CANDIDATES:
                self._cols.append(([0], [], [], [], []))
            else:
                self._cols.append([])

    def add(self, values: tuple[Any, ...]) -> None:
        for (_, kind), col, value in zip(self.columns, self._cols, values, strict=True):
            if kind == MESSAGES:
                offsets, roles, contents = col
                for m in value:
                    roles.append(m["role"])
                    contents.append(m["content"])
                offsets.append(len(roles))
            elif kind == CANDIDATES:
                offsets, ids, texts, versions, finishes = col
                for c in value:
                    ids.append(c["id"])
                    texts.append(c["text"])
                    versions.append(c["model_version_id"])
                    finishes.append(c["finish_reason"])
                offsets.append(len(ids))
            else:
                col.append(value)
        self.n += 1

    def build(self):
        import pyarrow as pa

        arrays = []
        for (_, kind), col, f in zip(self.columns, self._cols, self.schema, strict=True):
            if kind == MESSAGES:
                offsets, roles, contents = col
                values = pa.StructArray.from_arrays(
                    [pa.array(roles, pa.string()), pa.array(contents, pa.string())],
                    fields=list(f.type.value_type),
                )
                arrays.append(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values))
            elif kind == CANDIDATES:
                offsets, ids, texts, versions, finishes = col
                values = pa.StructArray.from_arrays(
                    [
                        pa.array(ids, pa.int64()),
                        pa.array(texts, pa.string()),
                        pa.array(versions, pa.int64()),
                        pa.array(finishes, pa.string()),
                    ],
                    fields=list(f.type.value_type),
                )
                arrays.append(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values))
            else:
                arrays.append(pa.array(col, f.type))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self._reset()
        return batch


class ArrowSplitSink:
    """Parquet and/or Arrow-stream (``datasets``) files for one split, fed by record batches."""

    def __init__(
        self,
        columns: list[Column],
        *,
        parquet_path: Path | None,
        arrow_path: Path | None,
        batch_rows: int = 8192,
    ):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.schema = arrow_schema(columns)
        self.builder = BatchBuilder(columns, self.schema)
        self.batch_rows = batch_rows
        self._parquet = (
            pq.ParquetWriter(
                str(parquet_path),
                self.schema,
                compression="zstd",
                write_statistics=True,
                use_dictionary=False,
            )
            if parquet_path is not None
            else None
        )
        self._arrow = None
        self._arrow_fh = None
        if arrow_path is not None:
            from datasets import Features

            features = Features.from_arrow_schema(self.schema)
            meta = {"huggingface": json.dumps({"info": {"features": features.to_dict()}}, sort_keys=True)}
            self._arrow_fh = pa.OSFile(str(arrow_path), "wb")
            self._arrow = pa.ipc.new_stream(self._arrow_fh, self.schema.with_metadata(meta))

    def write(self, values: tuple[Any, ...]) -> None:
        self.builder.add(values)
        if self.builder.n >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.builder.n:
            return
        batch = self.builder.build()
        if self._parquet is not None:
            self._parquet.write_batch(batch)
        if self._arrow is not None:
            self._arrow.write_batch(batch)

    def close(self) -> None:
        self._flush()
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._arrow is not None:
            self._arrow.close()
            self._arrow_fh.close()
            self._arrow = None


def write_datasets_metadata(
    folder: Path, columns: list[Column], *, content_hash: str, license: str, description: str
) -> None:
    """The JSON files ``datasets.load_from_disk`` reads beside the Arrow files (a DatasetDict)."""
    from datasets import Features

    features = Features.from_arrow_schema(arrow_schema(columns)).to_dict()
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
        if "parquet" in formats or "hf" in formats:
            for split in SPLITS:
                arrow_path = None
                if "hf" in formats:
                    (folder / "hf" / split).mkdir(parents=True, exist_ok=True)
                    arrow_path = folder / "hf" / split / "data-00000-of-00001.arrow"
                self.arrow[split] = ArrowSplitSink(
                    columns,
                    parquet_path=folder / f"{split}.parquet" if "parquet" in formats else None,
                    arrow_path=arrow_path,
                )

    def write(self, is_test: bool, values: tuple[Any, ...]) -> None:
        split = "test" if is_test else "train"
        self.jsonl[split].write(values)
        if self.arrow:
            self.arrow[split].write(values)

    def close(self) -> None:
        for sink in self.jsonl.values():
            sink.close()
        for sink in self.arrow.values():
            sink.close()

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for split in SPLITS:
            h.update(f"{split}.jsonl\n".encode())
            h.update(self.jsonl[split].hash.hexdigest().encode())
            h.update(b"\n")
        return h.hexdigest()
