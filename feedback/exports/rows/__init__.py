"""From derived rows to snapshot rows, streaming, in constant memory.

The derived rows (PreferencePair, BinaryLabel, Demonstration, or Annotation for ``raw``) come from
feedback.exports.reading with the annotation-level filters applied in SQL, in (prompt, item,
annotation, row) order, a slice of items at a time. Rows are grouped
per item in Python — one item at a time is all that is held — to compute agreement, apply
best-versus-rest and majority, and the candidate-level filters (model version, truncation). Each
output row goes to the train or the test side by a seeded hash of its prompt's content, so a
prompt never lands on both sides (the same prompt text in two projects included).

Rows come out as tuples in the order of :func:`plan_columns`; the writers turn them into JSONL,
Parquet and Arrow.

The submodules: ``plan`` (column types, :func:`plan_columns`, :func:`has_known_margins`,
:func:`source_count`), ``common`` (:class:`ExportStats`, the seeded split, the prompt cache and
counter, grouping per item, agreement), one per kind — ``preference``, ``unpaired``, ``sft``,
``raw`` — and ``dispatch`` (:func:`iter_rows`, which picks the kind's iterator).
"""

from __future__ import annotations

from feedback.exports.rows.common import ExportStats, PromptCache, PromptCounter, Row, split_is_test
from feedback.exports.rows.dispatch import ITERATORS, iter_rows
from feedback.exports.rows.plan import (
    ASSISTANT,
    BOOL,
    CANDIDATES,
    FLOAT,
    INT,
    MESSAGES,
    STRING,
    Column,
    has_known_margins,
    plan_columns,
    source_count,
)
from feedback.exports.rows.preference import iter_preference
from feedback.exports.rows.raw import RAW_FIELDS, iter_raw, pseudonym
from feedback.exports.rows.sft import DEMO_FIELDS, iter_sft
from feedback.exports.rows.unpaired import iter_unpaired

__all__ = [
    "ASSISTANT",
    "BOOL",
    "CANDIDATES",
    "DEMO_FIELDS",
    "FLOAT",
    "INT",
    "ITERATORS",
    "MESSAGES",
    "RAW_FIELDS",
    "STRING",
    "Column",
    "ExportStats",
    "PromptCache",
    "PromptCounter",
    "Row",
    "has_known_margins",
    "iter_preference",
    "iter_raw",
    "iter_rows",
    "iter_sft",
    "iter_unpaired",
    "plan_columns",
    "pseudonym",
    "source_count",
    "split_is_test",
]
