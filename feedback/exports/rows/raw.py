"""Raw snapshots: one row per annotation, with the candidates shown and a pseudonymous annotator."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

from feedback.exports.reading import stream_by_items
from feedback.exports.rows.common import ExportStats, PromptCache, PromptCounter, Row, _json
from feedback.exports.spec import ExportSpec
from feedback.models import Annotation, ItemCandidate

RAW_FIELDS = (
    "item_id",  # 0
    "id",  # 1
    "item__project__slug",  # 2
    "kind",  # 3
    "annotator_id",  # 4
    "item__prompt_id",  # 5
    "item__prompt__content_hash",  # 6
    "item__prompt__messages",  # 7
    "item__prompt__text",  # 8
    "order_shown",  # 9
    "payload",  # 10
    "comment",  # 11
    "flags",  # 12
    "time_spent_ms",  # 13
    "created_at",  # 14
    "item__is_gold",  # 15
)


def pseudonym(salt: str, user_id: int) -> str:
    """A stable per-snapshot pseudonym: the same annotator gets the same id within a snapshot only."""
    return "annotator-" + hmac.new(salt.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()[:12]


def _iso(value: Any) -> str:
    """A database timestamp (datetime, or SQLite's text) as an ISO string, the same on every backend."""
    import datetime as dt

    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _canonical_json(value: Any) -> str:
    return json.dumps(_json(value), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def iter_raw(
    spec: ExportSpec,
    frozen: dict[str, Any],
    *,
    prompts: PromptCache,
    stats: ExportStats,
    chunk_size: int,
    salt: str,
    progress: Callable[[int], None] | None = None,
    **_: Any,
) -> Iterator[Row]:
    qs = Annotation.objects.filter(spec.annotation_q(frozen, item_filters=False)).order_by(
        "item__prompt_id", "item_id", "id"
    )
    counter = PromptCounter(stats)
    names: dict[int, str] = {}

    def flush(batch: list[tuple]) -> Iterator[Row]:
        item_ids = sorted({r[0] for r in batch})
        shown: dict[int, dict[int, dict[str, Any]]] = {}
        for item_id, position, cid, text, version, finish in (
            ItemCandidate.objects.filter(item_id__in=item_ids)
            .order_by("item_id", "position")
            .values_list(
                "item_id",
                "position",
                "candidate_id",
                "candidate__text",
                "candidate__model_version_id",
                "candidate__finish_reason",
            )
        ):
            shown.setdefault(item_id, {})[cid] = {
                "id": cid,
                "text": text,
                "model_version_id": version,
                "finish_reason": finish,
                "position": position,
            }
        for r in batch:
            cands = shown.get(r[0], {})
            order = [c for c in (_json(r[9]) or []) if c in cands]
            order += [c for c in cands if c not in order]
            candidates = [{k: v for k, v in cands[c].items() if k != "position"} for c in order]
            if r[4] not in names:
                if len(names) > 100_000:
                    names.clear()
                names[r[4]] = pseudonym(salt, r[4])
            prompt, is_test = prompts.get(r[5], r[6], r[7], r[8])
            values = (
                r[1],
                r[0],
                r[2],
                r[3],
                names[r[4]],
                prompt,
                candidates,
                _canonical_json(r[10]),
                r[11],
                _canonical_json(r[12]),
                int(r[13]),
                _iso(r[14]),
                bool(r[15]),
            )
            counter.add(r[5], is_test)
            stats.rows["test" if is_test else "train"] += 1
            yield (is_test, values)

    batch: list[tuple] = []
    last_item = None
    for r in stream_by_items(spec, qs, RAW_FIELDS, item_field="item_id", chunk_size=chunk_size):
        stats.source_rows += 1
        if r[0] != last_item:
            stats.items += 1
            last_item = r[0]
        batch.append(r)
        if len(batch) >= 1000:
            yield from flush(batch)
            if progress is not None:
                progress(len(batch))
            batch = []
    if batch:
        yield from flush(batch)
        if progress is not None:
            progress(len(batch))
