"""Unpaired (thumbs) snapshots, TRL's KTO prompt/completion/label: all votes, or merged by majority."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from feedback.exports.reading import label_rows
from feedback.exports.rows.common import (
    ExportStats,
    PromptCache,
    PromptCounter,
    Row,
    _agreement,
    _group_by_item,
    _passes_agreement,
)
from feedback.exports.spec import ExportSpec
from feedback.models import BinaryLabel


# Rows arrive in the layout of feedback.exports.reading.LABEL_FIELDS.
def iter_unpaired(
    spec: ExportSpec,
    frozen: dict[str, Any],
    *,
    prompts: PromptCache,
    stats: ExportStats,
    chunk_size: int,
    progress: Callable[[int], None] | None = None,
    **_: Any,
) -> Iterator[Row]:
    qs = BinaryLabel.objects.filter(spec.annotation_q(frozen, "annotation__", item_filters=False)).order_by()
    versions = set(spec.model_version_ids)
    counter = PromptCounter(stats)

    def emit(r: tuple, label: bool, votes: int, agreement: float):
        if versions and r[9] not in versions:
            stats.dropped["model_version"] += 1
            return None
        truncated = r[8] == "length"
        if truncated and not spec.include_truncated:
            stats.dropped["truncated"] += 1
            return None
        prompt, is_test = prompts.get(r[2], r[3], r[4], r[5])
        values: list[Any] = [prompt, r[7], bool(label)]
        if spec.include_truncated:
            values.append(truncated)
        if spec.include_sources:
            values += [r[0], r[6], votes, round(agreement, 6)]
        counter.add(r[2], is_test)
        stats.rows["test" if is_test else "train"] += 1
        return (is_test, tuple(values))

    rows = label_rows(spec, qs, chunk_size=chunk_size)
    for group in _group_by_item(rows, stats, progress):
        stats.source_rows += len(group)
        votes: dict[int, Counter] = {}
        for r in group:
            votes.setdefault(r[6], Counter())[bool(r[10])] += 1
        n_votes = len({r[1] for r in group})
        agreement = _agreement(votes)
        if not _passes_agreement(spec, stats, n_votes, agreement, len(group)):
            continue
        if spec.aggregation == "all":
            for r in group:
                out = emit(r, bool(r[10]), 1, agreement)
                if out is not None:
                    yield out
            continue
        first: dict[int, tuple] = {}
        for r in group:
            first.setdefault(r[6], r)
        for cand, r in first.items():
            counts = votes[cand]
            stats.dropped["merged_by_majority"] += sum(counts.values()) - 1
            if counts[True] == counts[False]:
                stats.dropped["tie"] += 1
                continue
            label = counts[True] > counts[False]
            out = emit(r, label, counts[label], counts[label] / sum(counts.values()))
            if out is not None:
                yield out
