"""Annotation payloads: validation per task kind and the preference pairs / binary labels they imply.

Pure functions (no database): the submit service calls them inside its transaction.

Canonical payloads (what is stored on Annotation.payload):
- ranking:  ``{"ranking": [[best ids...], [next ids...], ...]}`` — groups best first, each group a list of
  candidate ids; a group of two or more is a tie (only where the project allows ties). The client may send
  a flat list ``[3, 1, 2]`` (no ties) or mix ids and lists ``[3, [1, 2]]``; both are normalised.
- pairwise: ``{"choice": "A" | "B" | "tie" | "both_bad", "strength": "slight" | "clear" | None}`` where A is
  the first response shown (order_shown[0]) and B the second; the stored payload adds ``"chosen"`` (the
  candidate id picked, or null).
- binary:   ``{"labels": {"<candidate id>": "up" | "down", ...}, "reasons": {"<candidate id>": [tags]}}`` with
  one label per shown candidate; reasons are optional short tags.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedback.errors import InvalidInput
from feedback.models import TaskKind

FLAGS = ("harmful", "pii", "broken")
PAIRWISE_CHOICES = ("A", "B", "tie", "both_bad")
STRENGTHS = ("slight", "clear")
STRENGTH_MARGIN = {"slight": 1.0, "clear": 2.0}
TAG_RE = re.compile(r"^[\w][\w .:/-]{0,39}$")
MAX_TAGS = 10
MAX_COMMENT = 10_000
MAX_DEMONSTRATION = 100_000
MAX_TIME_SPENT_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class PairSpec:
    chosen: int
    rejected: int
    is_tie: bool = False
    margin: float | None = None


@dataclass(frozen=True, slots=True)
class LabelSpec:
    candidate: int
    label: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Judgement:
    payload: dict[str, Any]
    pairs: list[PairSpec] = field(default_factory=list)
    labels: list[LabelSpec] = field(default_factory=list)


def _as_id(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: expected a candidate id, got {value!r}", details={"field": where})
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise InvalidInput(f"{where}: expected a candidate id, got {value!r}", details={"field": where})


def _require_dict(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidInput("payload must be a JSON object", details={"field": "payload"})
    return payload


def validate_ranking(payload: Any, shown: Sequence[int], *, allow_ties: bool) -> Judgement:
    payload = _require_dict(payload)
    raw = payload.get("ranking")
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("payload.ranking must be a non-empty list", details={"field": "ranking"})
    groups: list[list[int]] = []
    for i, entry in enumerate(raw):
        where = f"ranking[{i}]"
        if isinstance(entry, list):
            if not entry:
                raise InvalidInput(f"{where}: an empty group", details={"field": where})
            group = [_as_id(v, f"{where}[{j}]") for j, v in enumerate(entry)]
        else:
            group = [_as_id(entry, where)]
        if len(group) > 1 and not allow_ties:
            raise InvalidInput(
                f"{where}: ties are not allowed in this project", details={"field": where, "reason": "ties"}
            )
        groups.append(group)
    flat = [cid for g in groups for cid in g]
    dupes = sorted({c for c in flat if flat.count(c) > 1})
    if dupes:
        raise InvalidInput(f"ranking names candidate(s) {dupes} more than once", details={"field": "ranking"})
    unknown = sorted(set(flat) - set(shown))
    if unknown:
        raise InvalidInput(
            f"ranking names candidate(s) {unknown} that were not shown", details={"field": "ranking"}
        )
    missing = [c for c in shown if c not in set(flat)]
    if missing:
        raise InvalidInput(
            f"ranking leaves out candidate(s) {missing}: rank every response shown",
            details={"field": "ranking"},
        )
    pairs: list[PairSpec] = []
    for gi, better in enumerate(groups):
        for a_i, a in enumerate(better):
            for b in better[a_i + 1 :]:
                pairs.append(PairSpec(chosen=a, rejected=b, is_tie=True, margin=0.0))
        for gj in range(gi + 1, len(groups)):
            for a in better:
                for b in groups[gj]:
                    pairs.append(PairSpec(chosen=a, rejected=b, margin=float(gj - gi)))
    return Judgement(payload={"ranking": groups}, pairs=pairs)


def validate_pairwise(payload: Any, shown: Sequence[int], *, allow_ties: bool) -> Judgement:
    payload = _require_dict(payload)
    if len(shown) != 2:
        raise InvalidInput("a pairwise item must show exactly two responses")
    choice = payload.get("choice")
    if choice not in PAIRWISE_CHOICES:
        raise InvalidInput(
            f"payload.choice must be one of {', '.join(PAIRWISE_CHOICES)}, got {choice!r}",
            details={"field": "choice"},
        )
    if choice == "tie" and not allow_ties:
        raise InvalidInput(
            "ties are not allowed in this project", details={"field": "choice", "reason": "ties"}
        )
    strength = payload.get("strength")
    if strength in ("", None):
        strength = None
    elif strength not in STRENGTHS:
        raise InvalidInput(
            f"payload.strength must be slight, clear or absent, got {strength!r}",
            details={"field": "strength"},
        )
    if strength is not None and choice not in ("A", "B"):
        raise InvalidInput(
            "payload.strength applies only to a choice of A or B", details={"field": "strength"}
        )
    a, b = shown
    pairs: list[PairSpec] = []
    chosen: int | None = None
    if choice == "A":
        chosen = a
        pairs.append(PairSpec(chosen=a, rejected=b, margin=STRENGTH_MARGIN.get(strength or "")))
    elif choice == "B":
        chosen = b
        pairs.append(PairSpec(chosen=b, rejected=a, margin=STRENGTH_MARGIN.get(strength or "")))
    elif choice == "tie":
        pairs.append(PairSpec(chosen=a, rejected=b, is_tie=True, margin=0.0))
    return Judgement(payload={"choice": choice, "strength": strength, "chosen": chosen}, pairs=pairs)


def _tags(value: Any, where: str) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise InvalidInput(f"{where}: expected a list of at most {MAX_TAGS} tags", details={"field": where})
    out = []
    for j, tag in enumerate(value):
        if not isinstance(tag, str) or not TAG_RE.match(tag.strip()):
            raise InvalidInput(
                f"{where}[{j}]: a tag is 1-40 letters, digits, spaces or . : / - _", details={"field": where}
            )
        out.append(tag.strip())
    return tuple(dict.fromkeys(out))


def validate_binary(payload: Any, shown: Sequence[int], *, allow_ties: bool) -> Judgement:
    payload = _require_dict(payload)
    raw = payload.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise InvalidInput(
            'payload.labels must map each shown candidate id to "up" or "down"', details={"field": "labels"}
        )
    labels: dict[int, bool] = {}
    for key, value in raw.items():
        cid = _as_id(key, f"labels[{key!r}]")
        if cid not in shown:
            raise InvalidInput(f"labels: candidate {cid} was not shown", details={"field": "labels"})
        if value not in ("up", "down"):
            raise InvalidInput(
                f'labels[{cid}]: expected "up" or "down", got {value!r}', details={"field": "labels"}
            )
        labels[cid] = value == "up"
    missing = [c for c in shown if c not in labels]
    if missing:
        raise InvalidInput(
            f"labels: give a thumbs up or down to candidate(s) {missing}", details={"field": "labels"}
        )
    raw_reasons = payload.get("reasons") or {}
    if not isinstance(raw_reasons, dict):
        raise InvalidInput(
            "payload.reasons must map candidate ids to lists of tags", details={"field": "reasons"}
        )
    reasons: dict[int, tuple[str, ...]] = {}
    for key, value in raw_reasons.items():
        cid = _as_id(key, f"reasons[{key!r}]")
        if cid not in shown:
            raise InvalidInput(f"reasons: candidate {cid} was not shown", details={"field": "reasons"})
        reasons[cid] = _tags(value, f"reasons[{cid}]")
    ordered = [c for c in shown]
    return Judgement(
        payload={
            "labels": {str(c): ("up" if labels[c] else "down") for c in ordered},
            "reasons": {str(c): list(reasons[c]) for c in ordered if reasons.get(c)},
        },
        labels=[LabelSpec(candidate=c, label=labels[c], reasons=reasons.get(c, ())) for c in ordered],
    )


VALIDATORS = {
    TaskKind.RANKING.value: validate_ranking,
    TaskKind.PAIRWISE.value: validate_pairwise,
    TaskKind.BINARY.value: validate_binary,
}


def validate_payload(kind: str, payload: Any, shown: Sequence[int], *, allow_ties: bool) -> Judgement:
    try:
        validator = VALIDATORS[kind]
    except KeyError:  # pragma: no cover - the model's check constraint keeps kinds valid
        raise InvalidInput(f"unknown task kind {kind!r}") from None
    return validator(payload, list(shown), allow_ties=bool(allow_ties))


def validate_extras(
    *, idempotency_key: str, time_spent_ms: int, comment: str, flags: Iterable[str], demonstration: str
) -> tuple[str, int, str, list[str], str]:
    """Check the fields every kind shares; return them normalised."""
    if not isinstance(idempotency_key, str) or not (1 <= len(idempotency_key.strip()) <= 64):
        raise InvalidInput("idempotency_key must be 1-64 characters", details={"field": "idempotency_key"})
    if (
        isinstance(time_spent_ms, bool)
        or not isinstance(time_spent_ms, int)
        or not (0 <= time_spent_ms <= MAX_TIME_SPENT_MS)
    ):
        raise InvalidInput(
            f"time_spent_ms must be an integer from 0 to {MAX_TIME_SPENT_MS}",
            details={"field": "time_spent_ms"},
        )
    comment = comment or ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise InvalidInput(
            f"comment must be text of at most {MAX_COMMENT} characters", details={"field": "comment"}
        )
    if isinstance(flags, str):
        raise InvalidInput("flags must be a list", details={"field": "flags"})
    flag_list = list(dict.fromkeys(flags or ()))
    bad = [f for f in flag_list if f not in FLAGS]
    if bad:
        raise InvalidInput(f"unknown flag(s) {bad}: use {', '.join(FLAGS)}", details={"field": "flags"})
    demonstration = demonstration or ""
    if not isinstance(demonstration, str) or len(demonstration) > MAX_DEMONSTRATION:
        raise InvalidInput(
            f"demonstration must be text of at most {MAX_DEMONSTRATION} characters",
            details={"field": "demonstration"},
        )
    return idempotency_key.strip(), time_spent_ms, comment.strip(), flag_list, demonstration.strip()
