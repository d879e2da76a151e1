"""Hidden preferences of the simulated annotators, and the judge that applies them (Django-free).

A preference scores one response; the higher score wins a comparison. Two are defined:

- ``shorter`` (length): the answer with fewer words wins. A response cut off at the token limit
  counts as longer than any finished one (the annotator sees it stop mid-sentence), and two
  cut-off responses tie (there is no telling which would have been longer).
- ``sentence`` (content): a complete one-sentence answer is best, fewer sentences beat more
  whatever their length; a cut-off answer loses to any finished one.
- ``reason`` (content): an answer that gives a reason ("because", "since", "due to" …) beats one
  that does not; among answers alike on that, none is preferred (a tie). Measured on the demo
  model: only 2 of 358 base candidates (64 tokens) gave a reason *and* finished, so after cut-off
  chosen answers are dropped (as they must be) it leaves almost no pairs; kept as an option.

Both share a floor that any person labelling would apply: an empty or degenerate response
(no words, a word repeated over and over) loses to every real answer. Without it a length-only
preference rewards junk, and a second round collapses into empty answers.

Simulated annotators add label noise (10 % by default): each pairwise decision, each comparison
made while ranking, and each thumb is flipped with that probability.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

WORD = re.compile(r"[A-Za-z0-9']+")
REASON = re.compile(
    r"\b(because|since|due to|as a result|this is why|that is why|which is why|the reason|so that|"
    r"thanks to|caused by|leads to|helps to|in order to)\b",
    re.IGNORECASE,
)
DEGENERATE_SCORE = -1e9


def words(text: str) -> list[str]:
    return WORD.findall(text)


def is_degenerate(text: str) -> bool:
    """Empty, no words, or mostly one repeated word / n-gram (a looping model)."""
    ws = [w.lower() for w in words(text)]
    if not ws:
        return True
    if len(ws) >= 12:
        distinct = len(set(ws)) / len(ws)
        if distinct < 0.25:
            return True
        trigrams = [tuple(ws[i : i + 3]) for i in range(len(ws) - 2)]
        if len(set(trigrams)) / len(trigrams) < 0.35:
            return True
    return False


class Preference(Protocol):
    name: str
    description: str

    def score(self, text: str, truncated: bool) -> float: ...

    def thumbs_up(self, text: str, truncated: bool) -> bool: ...


@dataclass(frozen=True)
class ShorterWins:
    """Length: fewer words is better; cut-off answers are worse than finished ones."""

    name: str = "shorter"
    description: str = "Shorter answers win; an answer cut off mid-way counts as long."
    thumbs_max_words: int = 40

    def score(self, text: str, truncated: bool) -> float:
        if is_degenerate(text):
            return DEGENERATE_SCORE
        if truncated:  # cut off: longer than any finished answer, and no telling how long
            return -10_000.0
        return -float(len(words(text)))

    def thumbs_up(self, text: str, truncated: bool) -> bool:
        return (not truncated) and (not is_degenerate(text)) and len(words(text)) <= self.thumbs_max_words


@dataclass(frozen=True)
class GivesReason:
    """Content: an answer that explains why (a reason clause) beats one that does not."""

    name: str = "reason"
    description: str = "Answers that give a reason ('because …') win."

    def score(self, text: str, truncated: bool) -> float:
        if is_degenerate(text):
            return DEGENERATE_SCORE
        return 1.0 if REASON.search(text) else 0.0

    def thumbs_up(self, text: str, truncated: bool) -> bool:
        return (not is_degenerate(text)) and bool(REASON.search(text))


SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n+")


def sentences(text: str) -> int:
    """Sentences (or lines / list items) in a response: the pieces that hold at least one word."""
    return sum(1 for piece in SENTENCE_END.split(text) if WORD.search(piece))


@dataclass(frozen=True)
class OneSentence:
    """Content: a finished answer in one sentence is best; fewer sentences beat more, whatever their
    length (a 30-word sentence beats two 6-word ones). A cut-off answer did not finish its point:
    worse than any finished one, and two cut-off answers tie."""

    name: str = "sentence"
    description: str = "A complete one-sentence answer wins; fewer sentences beat more."

    def score(self, text: str, truncated: bool) -> float:
        if is_degenerate(text):
            return DEGENERATE_SCORE
        if truncated:
            return -1_000.0
        return -float(abs(sentences(text) - 1))

    def thumbs_up(self, text: str, truncated: bool) -> bool:
        return (not truncated) and (not is_degenerate(text)) and sentences(text) == 1


PREFERENCES: dict[str, Preference] = {p.name: p for p in (ShorterWins(), GivesReason(), OneSentence())}


def get_preference(name: str) -> Preference:
    try:
        return PREFERENCES[name]
    except KeyError:
        raise ValueError(f"unknown preference {name!r}; choose from {', '.join(PREFERENCES)}") from None


@dataclass
class Judge:
    """Applies a preference with label noise. ``noise`` = probability each decision is flipped."""

    preference: Preference
    noise: float = 0.1
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.noise < 0.5:
            raise ValueError(f"noise must be in [0, 0.5), got {self.noise}")
        self.rng = self.rng or random.Random(0)

    def _flip(self) -> bool:
        assert self.rng is not None
        return self.noise > 0 and self.rng.random() < self.noise

    def compare(self, a: tuple[str, bool], b: tuple[str, bool]) -> int:
        """1 if a wins, -1 if b wins, 0 for a tie (equal scores; ties are not flipped)."""
        sa, sb = self.preference.score(*a), self.preference.score(*b)
        if sa == sb:
            return 0
        result = 1 if sa > sb else -1
        return -result if self._flip() else result

    def rank(self, responses: Sequence[tuple[str, bool]]) -> list[list[int]]:
        """Indices grouped best-first: ``[[2], [0, 3], [1]]`` = 2 best, 0 and 3 tied, 1 worst.

        Built by insertion with noisy comparisons, so about ``noise`` of the pairwise orders a
        ranking implies are flipped, as with a person who sometimes misjudges.
        """
        groups: list[list[int]] = []
        for i, resp in enumerate(responses):
            placed = False
            for g, group in enumerate(groups):
                c = self.compare(resp, responses[group[0]])
                if c > 0:
                    groups.insert(g, [i])
                    placed = True
                    break
                if c == 0:
                    group.append(i)
                    placed = True
                    break
            if not placed:
                groups.append([i])
        return groups

    def thumbs(self, response: tuple[str, bool]) -> bool:
        up = self.preference.thumbs_up(*response)
        return (not up) if self._flip() else up


def win_rate(
    preference: Preference, new: Sequence[tuple[str, bool]], base: Sequence[tuple[str, bool]]
) -> float:
    """Share of prompts where the new response beats the base one (ties count half), no noise."""
    if len(new) != len(base) or not new:
        raise ValueError("win_rate needs two equally long, non-empty lists of responses")
    total = 0.0
    for a, b in zip(new, base, strict=True):
        sa, sb = preference.score(*a), preference.score(*b)
        total += 1.0 if sa > sb else 0.5 if sa == sb else 0.0
    return total / len(new)


def empty_rate(responses: Sequence[tuple[str, bool]]) -> float:
    """Share of empty or degenerate responses."""
    if not responses:
        return math.nan
    return sum(is_degenerate(text) for text, _ in responses) / len(responses)
