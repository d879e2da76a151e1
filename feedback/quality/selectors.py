"""Quality reads: agreement, gold accuracy, position bias and the leaderboard of one project."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import F
from scipy.stats import binomtest

from feedback.models import Annotation, Membership, PreferencePair, Project, TaskKind
from feedback.quality import agreement as ka
from feedback.quality.leaderboard import Outcome, Standing, leaderboard

LEVEL = {TaskKind.RANKING: "ordinal", TaskKind.PAIRWISE: "nominal", TaskKind.BINARY: "nominal"}


# ---- canonical values ---------------------------------------------------------------------------------------


def pairwise_value(payload: dict[str, Any]) -> str:
    """What was chosen, independent of the order shown: a candidate id, 'tie' or 'both_bad'."""
    if payload.get("chosen") is not None:
        return str(payload["chosen"])
    return str(payload.get("choice"))


def ranking_ranks(payload: dict[str, Any]) -> dict[int, int]:
    """Candidate id -> dense rank (1 = best; tied candidates share a rank)."""
    return {int(c): gi + 1 for gi, group in enumerate(payload.get("ranking", [])) for c in group}


def unit_values(kind: str, item_id: int, payload: dict[str, Any]) -> dict[Hashable, Hashable]:
    """The units one annotation codes and the value it gives each (see agreement.py)."""
    if kind == TaskKind.PAIRWISE:
        return {item_id: pairwise_value(payload)}
    if kind == TaskKind.BINARY:
        return {(item_id, int(c)): v for c, v in payload.get("labels", {}).items()}
    return {(item_id, c): r for c, r in ranking_ranks(payload).items()}


def gold_score(kind: str, payload: dict[str, Any], gold: dict[str, Any]) -> float:
    """How well one annotation matches the known answer, from 0 to 1."""
    if kind == TaskKind.PAIRWISE:
        return float(pairwise_value(payload) == pairwise_value(gold))
    if kind == TaskKind.BINARY:
        want = {str(c): v for c, v in gold.get("labels", {}).items()}
        got = {str(c): v for c, v in payload.get("labels", {}).items()}
        return sum(got.get(c) == v for c, v in want.items()) / len(want) if want else 0.0
    want_r, got_r = ranking_ranks(gold), ranking_ranks(payload)
    strict = [(a, b) for a in want_r for b in want_r if want_r[a] < want_r[b]]
    if not strict:
        return float(all(got_r.get(a) == got_r.get(b) for a in want_r for b in want_r))
    agree = sum(1 for a, b in strict if a in got_r and b in got_r and got_r[a] < got_r[b])
    return agree / len(strict)


# ---- agreement and gold -------------------------------------------------------------------------------------


@dataclass(slots=True)
class AnnotatorQuality:
    user_id: int
    username: str
    annotations: int = 0
    alpha: float | None = None
    shared_units: int = 0
    gold_answered: int = 0
    gold_accuracy: float | None = None
    flagged: bool = False
    first_position_wins: int = 0
    decisive: int = 0


@dataclass(slots=True)
class ProjectQuality:
    project_id: int
    kind: str
    level: str
    alpha: float | None
    units: int
    annotations: int
    annotators: list[AnnotatorQuality] = field(default_factory=list)
    position_bias: dict[str, Any] = field(default_factory=dict)


def _annotation_rows(project: Project) -> list[tuple]:
    return list(
        Annotation.objects.filter(item__project=project)
        .order_by("created_at", "id")
        .values_list(
            "id",
            "item_id",
            "annotator_id",
            "annotator__username",
            "payload",
            "order_shown",
            "item__is_gold",
            "item__gold_payload",
        )
    )


def project_quality(*, project: Project) -> ProjectQuality:
    kind = project.task_kind
    level = LEVEL[TaskKind(kind)]
    rows = _annotation_rows(project)
    data: dict[Hashable, dict[Hashable, Hashable]] = defaultdict(dict)
    people: dict[int, AnnotatorQuality] = {}
    gold_scores: dict[int, list[float]] = defaultdict(list)
    for _ann_id, item_id, user_id, username, payload, order_shown, is_gold, gold in rows:
        person = people.setdefault(user_id, AnnotatorQuality(user_id=user_id, username=username))
        person.annotations += 1
        for unit, value in unit_values(kind, item_id, payload).items():
            data[unit][user_id] = value
        if is_gold and gold:
            gold_scores[user_id].append(gold_score(kind, payload, gold))
        first = order_shown[0] if order_shown else None
        if kind == TaskKind.PAIRWISE and payload.get("choice") in ("A", "B"):
            person.decisive += 1
            person.first_position_wins += payload["choice"] == "A"
        elif kind == TaskKind.RANKING and first is not None:
            top = payload.get("ranking", [[]])[0]
            if len(top) == 1:
                person.decisive += 1
                person.first_position_wins += top[0] == first
        elif kind == TaskKind.BINARY and first is not None:
            labels = payload.get("labels", {})
            if len(set(labels.values())) == 2:  # one up and one down: did the first shown get the up?
                person.decisive += 1
                person.first_position_wins += labels.get(str(first)) == "up"
    flagged = dict(Membership.objects.filter(project=project).values_list("user_id", "flagged"))
    for user_id, person in people.items():
        person.alpha, person.shared_units = ka.coder_alpha(data, user_id, level)
        scores = gold_scores.get(user_id, [])
        person.gold_answered = len(scores)
        person.gold_accuracy = sum(scores) / len(scores) if scores else None
        person.flagged = bool(flagged.get(user_id, False))
    pairable = sum(1 for codes in data.values() if len(codes) >= 2)
    return ProjectQuality(
        project_id=project.pk,
        kind=kind,
        level=level,
        alpha=ka.alpha(data, level),
        units=pairable,
        annotations=len(rows),
        annotators=sorted(people.values(), key=lambda p: p.username),
        position_bias=_position_bias(kind, project.responses_per_item, list(people.values())),
    )


def _position_bias(kind: str, k: int, people: list[AnnotatorQuality]) -> dict[str, Any]:
    """How often the first response shown wins, against what chance predicts (a two-sided binomial test)."""
    wins = sum(p.first_position_wins for p in people)
    n = sum(p.decisive for p in people)
    expected = {TaskKind.PAIRWISE: 0.5, TaskKind.RANKING: 1.0 / max(k, 1), TaskKind.BINARY: 0.5}[
        TaskKind(kind)
    ]
    what = {
        TaskKind.PAIRWISE: "share of A/B choices that picked the response shown first (A)",
        TaskKind.RANKING: "share of rankings with one best response where it was the one shown first",
        TaskKind.BINARY: "share of one-up-one-down judgements where the first shown got the thumbs up",
    }[TaskKind(kind)]
    return {
        "what": what,
        "decisive": n,
        "first_wins": wins,
        "first_rate": wins / n if n else None,
        "expected": expected,
        "p_value": float(binomtest(wins, n, expected).pvalue) if n else None,
    }


# ---- leaderboard --------------------------------------------------------------------------------------------


def leaderboard_outcomes(*, project: Project, include_flagged: bool = False) -> list[Outcome]:
    """Every preference pair of the project whose two candidates come from different model versions."""
    pairs = PreferencePair.objects.filter(annotation__item__project=project).exclude(
        chosen__model_version_id=F("rejected__model_version_id")
    )
    if not include_flagged:
        flagged = Membership.objects.filter(project=project, flagged=True).values("user_id")
        pairs = pairs.exclude(annotation__annotator_id__in=flagged)
    rows = pairs.order_by("annotation__created_at", "id").values_list(
        "annotation_id", "chosen__model_version__name", "rejected__model_version__name", "is_tie"
    )
    return [Outcome(group=a, winner=w, loser=lo, tie=t) for a, w, lo, t in rows]


def project_leaderboard(
    *, project: Project, bootstrap: int = 200, include_flagged: bool = False, seed: int = 0
) -> list[Standing]:
    return leaderboard(
        leaderboard_outcomes(project=project, include_flagged=include_flagged), bootstrap=bootstrap, seed=seed
    )
