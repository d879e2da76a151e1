"""Preference snapshots (TRL's prompt/chosen/rejected): best-versus-rest, majority, ties, margins."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from feedback.exports.reading import preference_rows
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
from feedback.models import PreferencePair, TaskKind


def _best_vs_rest(rows: list[tuple], stats: ExportStats) -> list[tuple]:
    """Keep, per ranking annotation, only the pairs best ≻ other (best: never on the losing side)."""
    out: list[tuple] = []
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end][1] == rows[start][1]:
            end += 1
        ann_rows = rows[start:end]
        if ann_rows[0][2] != TaskKind.RANKING:
            out.extend(ann_rows)
        else:
            losers = {r[11] for r in ann_rows if not r[15]}
            for r in ann_rows:
                if not r[15] and r[7] not in losers and r[11] in losers:
                    out.append(r)
                else:
                    stats.dropped["not_best_vs_rest"] += 1
        start = end
    return out


# Rows arrive in the layout of feedback.exports.reading.PREF_FIELDS (r[7] chosen id, r[11] rejected id, …).
def iter_preference(
    spec: ExportSpec,
    frozen: dict[str, Any],
    *,
    prompts: PromptCache,
    stats: ExportStats,
    has_margin: bool,
    chunk_size: int,
    progress: Callable[[int], None] | None = None,
    **_: Any,
) -> Iterator[Row]:
    qs = PreferencePair.objects.filter(
        spec.annotation_q(frozen, "annotation__", item_filters=False)
    ).order_by()
    versions = set(spec.model_version_ids)
    margin_col = spec.include_margin and has_margin
    keep_ties = spec.ties == "keep"
    trunc_cols = spec.include_truncated
    sources = spec.include_sources
    counter = PromptCounter(stats)
    majority = spec.aggregation == "majority"
    plain = not (keep_ties or trunc_cols or sources)

    def emit(r: tuple, tie: bool, chosen_first: bool, margin: float | None, votes: int, agreement: float):
        # r is a representative row; chosen_first says whether its chosen side won.
        c_id, c_text, c_fin, c_ver = (
            (r[7], r[8], r[9], r[10]) if chosen_first else (r[11], r[12], r[13], r[14])
        )
        j_id, j_text, j_fin, j_ver = (
            (r[11], r[12], r[13], r[14]) if chosen_first else (r[7], r[8], r[9], r[10])
        )
        if tie and not keep_ties:
            stats.dropped["tie"] += 1
            return None
        if versions and (c_ver not in versions or j_ver not in versions):
            stats.dropped["model_version"] += 1
            return None
        c_trunc, j_trunc = c_fin == "length", j_fin == "length"
        if (c_trunc or j_trunc) and not trunc_cols:
            stats.dropped["truncated"] += 1
            return None
        prompt, is_test = prompts.get(r[3], r[4], r[5], r[6])
        if r[3] != counter.last:
            counter.add(r[3], is_test)
        stats.rows["test" if is_test else "train"] += 1
        if plain:  # the common case, without building a list
            if margin_col:
                return (is_test, (prompt, c_text, j_text, 0.0 if margin is None else float(margin)))
            return (is_test, (prompt, c_text, j_text))
        values: list[Any] = [prompt, c_text, j_text]
        if margin_col:
            values.append(0.0 if margin is None else float(margin))
        if keep_ties:
            values.append(bool(tie))
        if trunc_cols:
            values += [c_trunc, j_trunc]
        if sources:
            values += [r[0], c_id, j_id, votes, round(agreement, 6)]
        return (is_test, tuple(values))

    rows = preference_rows(spec, qs, chunk_size=chunk_size)
    for group in _group_by_item(rows, stats, progress):
        stats.source_rows += len(group)
        if spec.ranking_pairs == "best_vs_rest":
            group = _best_vs_rest(group, stats)
        if not group:
            stats.items += 1
            continue
        # one annotation (rows are ordered by annotation within an item): agreement is trivially 1
        single = group[0][1] == group[-1][1]
        n_votes = 1 if single else len({r[1] for r in group})
        votes: dict[tuple[int, int], Counter] = {}
        if majority or not single:
            # votes per unordered candidate pair: +1 (lower id wins), -1 (higher id wins), 0 (tie)
            for r in group:
                lo, hi = (r[7], r[11]) if r[7] < r[11] else (r[11], r[7])
                outcome = 0 if r[15] else (1 if r[7] == lo else -1)
                votes.setdefault((lo, hi), Counter())[outcome] += 1
        agreement = _agreement(votes) if not single else 1.0
        if not _passes_agreement(spec, stats, n_votes, agreement, len(group)):
            continue
        if not majority:
            for r in group:
                out = emit(r, bool(r[15]), True, r[16], 1, agreement)
                if out is not None:
                    yield out
            continue
        first: dict[tuple[int, int], tuple] = {}
        margins: dict[tuple[tuple[int, int], int], list[float]] = {}
        for r in group:
            lo, hi = (r[7], r[11]) if r[7] < r[11] else (r[11], r[7])
            first.setdefault((lo, hi), r)
            outcome = 0 if r[15] else (1 if r[7] == lo else -1)
            if r[16] is not None:
                margins.setdefault(((lo, hi), outcome), []).append(float(r[16]))
        for key, r in first.items():
            counts = votes[key]
            top = max(counts.values())
            winners = [o for o, c in counts.items() if c == top]
            outcome = winners[0] if len(winners) == 1 else 0
            stats.dropped["merged_by_majority"] += sum(counts.values()) - 1
            known = margins.get((key, outcome))
            margin = sum(known) / len(known) if known else None
            lo = key[0]
            chosen_first = r[7] == lo if outcome >= 0 else r[7] != lo
            out = emit(r, outcome == 0, chosen_first, margin, top, counts[outcome] / sum(counts.values()))
            if out is not None:
                yield out
