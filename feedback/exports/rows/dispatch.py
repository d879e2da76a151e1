"""The entry point: the row iterator of a snapshot's kind, with its prompt cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from feedback.exports.rows.common import ExportStats, PromptCache, Row
from feedback.exports.rows.preference import iter_preference
from feedback.exports.rows.raw import iter_raw
from feedback.exports.rows.sft import iter_sft
from feedback.exports.rows.unpaired import iter_unpaired
from feedback.exports.spec import ExportSpec

ITERATORS = {"preference": iter_preference, "unpaired": iter_unpaired, "sft": iter_sft, "raw": iter_raw}


def iter_rows(
    spec: ExportSpec,
    frozen: dict[str, Any],
    *,
    seed: int,
    test_fraction: float,
    salt: str,
    stats: ExportStats,
    has_margin: bool,
    chunk_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Row]:
    prompts = PromptCache(spec=spec, seed=seed, test_fraction=test_fraction, stats=stats)
    return ITERATORS[spec.kind](
        spec,
        frozen,
        prompts=prompts,
        stats=stats,
        has_margin=has_margin,
        chunk_size=chunk_size,
        salt=salt,
        progress=progress,
    )
