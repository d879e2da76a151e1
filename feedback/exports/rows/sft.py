"""SFT snapshots from demonstrations, TRL's prompt/completion."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from feedback.exports.reading import stream_by_items
from feedback.exports.rows.common import ExportStats, PromptCache, PromptCounter, Row, _group_by_item
from feedback.exports.spec import ExportSpec
from feedback.models import Demonstration

DEMO_FIELDS = (
    "annotation__item_id",
    "annotation_id",
    "prompt_id",
    "prompt__content_hash",
    "prompt__messages",
    "prompt__text",
    "text",
)


def iter_sft(
    spec: ExportSpec,
    frozen: dict[str, Any],
    *,
    prompts: PromptCache,
    stats: ExportStats,
    chunk_size: int,
    progress: Callable[[int], None] | None = None,
    **_: Any,
) -> Iterator[Row]:
    qs = Demonstration.objects.filter(spec.annotation_q(frozen, "annotation__", item_filters=False)).order_by(
        "prompt_id", "annotation__item_id", "annotation_id"
    )
    counter = PromptCounter(stats)
    rows = stream_by_items(spec, qs, DEMO_FIELDS, item_field="annotation__item_id", chunk_size=chunk_size)
    for group in _group_by_item(rows, stats, progress):
        stats.source_rows += len(group)
        stats.items += 1
        if len(group) < spec.min_votes:
            stats.dropped["too_few_votes"] += len(group)
            continue
        for r in group:
            prompt, is_test = prompts.get(r[2], r[3], r[4], r[5])
            values: list[Any] = [prompt, r[6]]
            if spec.include_sources:
                values += [r[0], r[1]]
            counter.add(r[2], is_test)
            stats.rows["test" if is_test else "train"] += 1
            yield (is_test, tuple(values))
