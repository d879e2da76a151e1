"""What every row iterator shares: stats, the train/test split, prompt caching, grouping, agreement."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from feedback.exports.spec import ExportSpec

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
