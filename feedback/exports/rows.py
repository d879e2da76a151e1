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
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from feedback.exports.reading import label_rows, preference_rows, stream_by_items
from feedback.exports.spec import ExportSpec
from feedback.models import Annotation, BinaryLabel, Demonstration, ItemCandidate, PreferencePair, TaskKind

#: Column types the writers know: chat messages, plain values, and the candidates of a raw row.
MESSAGES, STRING, FLOAT, BOOL, INT, CANDIDATES = "messages", "string", "float", "bool", "int", "candidates"
#: One assistant turn: the value is the text; files hold ``[{"role": "assistant", "content": text}]``.
ASSISTANT = "assistant"

Column = tuple[str, str]
Row = tuple[bool, tuple[Any, ...]]  # (is_test, values)


@dataclass
class ExportStats:
    """What was read, what was dropped and why, and agreement — shown in previews and the card."""

    source_rows: int = 0
    items: int = 0
    items_multi_vote: int = 0
    agreement_sum: float = 0.0
    rows: dict[str, int] = field(default_factory=lambda: {"train": 0, "test": 0})
    prompts: dict[str, int] = field(default_factory=lambda: {"train": 0, "test": 0})
    dropped: Counter = field(default_factory=Counter)

    @property
    def mean_agreement(self) -> float | None:
        return round(self.agreement_sum / self.items_multi_vote, 6) if self.items_multi_vote else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_rows": self.source_rows,
            "items": self.items,
            "items_with_2_or_more_votes": self.items_multi_vote,
            "mean_agreement": self.mean_agreement,
            "rows": dict(self.rows),
            "prompts": dict(self.prompts),
            "dropped": dict(sorted(self.dropped.items())),
        }


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes | bytearray) else value


def split_is_test(content_hash: str, *, seed: int, test_fraction: float) -> bool:
    """Seeded, stable test membership of one prompt, from its content hash."""
    if test_fraction <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}:{content_hash}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < test_fraction


def pseudonym(salt: str, user_id: int) -> str:
    """A stable per-snapshot pseudonym: the same annotator gets the same id within a snapshot only."""
    return "annotator-" + hmac.new(salt.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()[:12]


class PromptCache:
    """Decoded prompts (messages or text) and their split side, for the last few hundred prompts."""

    def __init__(
        self, *, spec: ExportSpec, seed: int, test_fraction: float, stats: ExportStats, size: int = 512
    ):
        self.conversational = spec.style == "conversational"
        self.seed, self.test_fraction, self.stats, self.size = seed, test_fraction, stats, size
        self._cache: OrderedDict[int, tuple[Any, bool]] = OrderedDict()
        self._last_id: int | None = None
        self._last: tuple[Any, bool] = (None, False)

    def get(self, prompt_id: int, content_hash: str, messages_raw: Any, text: str) -> tuple[Any, bool]:
        if prompt_id == self._last_id:
            return self._last
        hit = self._cache.get(prompt_id)
        if hit is not None:
            self._last_id, self._last = prompt_id, hit
            return hit
        if self.conversational:
            msgs = _json(messages_raw)
            value: Any = [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]
        else:
            value = text
        hit = (value, split_is_test(content_hash, seed=self.seed, test_fraction=self.test_fraction))
        self._cache[prompt_id] = hit
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        self._last_id, self._last = prompt_id, hit
        return hit


class PromptCounter:
    """Counts distinct prompts per side in constant memory: rows come ordered by prompt first."""

    def __init__(self, stats: ExportStats):
        self.stats = stats
        self.last: int | None = None

    def add(self, prompt_id: int, is_test: bool) -> None:
        if prompt_id != self.last:
            self.last = prompt_id
            self.stats.prompts["test" if is_test else "train"] += 1


def plan_columns(spec: ExportSpec, *, has_margin: bool) -> list[Column]:
    """The columns of a snapshot, in file order (TRL's names first)."""
    text = MESSAGES if spec.style == "conversational" else STRING
    answer = ASSISTANT if spec.style == "conversational" else STRING
    if spec.kind == "preference":
        cols: list[Column] = [("prompt", text), ("chosen", answer), ("rejected", answer)]
        if spec.include_margin and has_margin:
            cols.append(("margin", FLOAT))
        if spec.ties == "keep":
            cols.append(("tie", BOOL))
        if spec.include_truncated:
            cols += [("chosen_truncated", BOOL), ("rejected_truncated", BOOL)]
        if spec.include_sources:
            cols += [
                ("item_id", INT),
                ("chosen_id", INT),
                ("rejected_id", INT),
                ("votes", INT),
                ("agreement", FLOAT),
            ]
        return cols
    if spec.kind == "unpaired":
        cols = [("prompt", text), ("completion", answer), ("label", BOOL)]
        if spec.include_truncated:
            cols.append(("completion_truncated", BOOL))
        if spec.include_sources:
            cols += [("item_id", INT), ("candidate_id", INT), ("votes", INT), ("agreement", FLOAT)]
        return cols
    if spec.kind == "sft":
        cols = [("prompt", text), ("completion", answer)]
        if spec.include_sources:
            cols += [("item_id", INT), ("annotation_id", INT)]
        return cols
    return [
        ("annotation_id", INT),
        ("item_id", INT),
        ("project", STRING),
        ("kind", STRING),
        ("annotator", STRING),
        ("prompt", text),
        ("candidates", CANDIDATES),
        ("payload", STRING),
        ("comment", STRING),
        ("flags", STRING),
        ("time_spent_ms", INT),
        ("created_at", STRING),
        ("is_gold", BOOL),
    ]


def has_known_margins(spec: ExportSpec, frozen: dict[str, Any]) -> bool:
    if spec.kind != "preference" or not spec.include_margin:
        return False
    return (
        PreferencePair.objects.filter(spec.annotation_q(frozen, "annotation__"), margin__isnull=False)
        .order_by()
        .exists()
    )


def source_count(spec: ExportSpec, frozen: dict[str, Any]) -> int:
    """How many derived rows the export will read (for progress bars)."""
    model = {
        "preference": PreferencePair,
        "unpaired": BinaryLabel,
        "sft": Demonstration,
        "raw": Annotation,
    }[spec.kind]
    prefix = "" if spec.kind == "raw" else "annotation__"
    return model.objects.filter(spec.annotation_q(frozen, prefix)).order_by().count()


def _group_by_item(rows: Iterator[tuple], stats: ExportStats, progress: Callable[[int], None] | None):
    """Consecutive rows sharing row[0] (the item id), as lists."""
    group: list[tuple] = []
    current = None
    n = 0
    for row in rows:
        n += 1
        if row[0] != current and group:
            yield group
            group = []
            if progress is not None and n >= 4096:
                progress(n)
                n = 0
        current = row[0]
        group.append(row)
    if group:
        yield group
    if progress is not None and n:
        progress(n)


def _agreement(votes: dict[Any, Counter]) -> float:
    shares = [max(c.values()) / sum(c.values()) for c in votes.values() if c]
    return sum(shares) / len(shares) if shares else 1.0


def _passes_agreement(
    spec: ExportSpec, stats: ExportStats, n_votes: int, agreement: float, n_rows: int
) -> bool:
    stats.items += 1
    if n_votes >= 2:
        stats.items_multi_vote += 1
        stats.agreement_sum += agreement
    if n_votes < spec.min_votes:
        stats.dropped["too_few_votes"] += n_rows
        return False
    if agreement < spec.min_agreement:
        stats.dropped["low_agreement"] += n_rows
        return False
    return True


# --- preference -----------------------------------------------------------------------------


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


# --- unpaired (thumbs) ----------------------------------------------------------------------


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


# --- SFT (demonstrations) -------------------------------------------------------------------
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


# --- raw annotations ------------------------------------------------------------------------
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
