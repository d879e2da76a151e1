"""Quality writes: gold answers on items, and flagging annotators below the project's threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from feedback.errors import InvalidInput
from feedback.models import Item, Membership, Project, TaskKind
from feedback.quality.selectors import project_quality
from feedback.services.payloads import validate_binary, validate_ranking

MIN_GOLD_ANSWERS = 3
MIN_SHARED_UNITS = 5


def _gold_canonical(item: Item, gold: Any) -> dict[str, Any]:
    kind = item.project.task_kind
    ids = list(item.slots.order_by("position").values_list("candidate_id", flat=True))
    if not isinstance(gold, dict):
        raise InvalidInput("gold_payload must be a JSON object", details={"field": "gold_payload"})
    if kind == TaskKind.PAIRWISE:
        if gold.get("choice") in ("tie", "both_bad") and gold.get("chosen") is None:
            return {"choice": gold["choice"], "chosen": None}
        chosen = gold.get("chosen")
        if isinstance(chosen, str) and chosen.isdigit():
            chosen = int(chosen)
        if chosen not in ids:
            raise InvalidInput(
                f'pairwise gold is {{"chosen": <one of {ids}>}} or {{"choice": "tie" | "both_bad"}}',
                details={"field": "gold_payload"},
            )
        return {"choice": "chosen", "chosen": chosen}
    if kind == TaskKind.RANKING:
        return validate_ranking(gold, ids, allow_ties=True).payload
    return validate_binary(gold, ids, allow_ties=True).payload


@transaction.atomic
def item_gold_set(
    *, item: Item, gold_payload: dict[str, Any] | None, annotations_required: int | None = None
) -> Item:
    """Make the item a gold item with this known answer (or an ordinary item again with None).

    Gold items are served at the project's gold_rate; each is judged by up to ``annotations_required``
    annotators (default: every member of the project, so that everyone meets it once).
    """
    if gold_payload is None:
        item.is_gold, item.gold_payload = False, None
        item.save(update_fields=["is_gold", "gold_payload"])
        return item
    item.gold_payload = _gold_canonical(item, gold_payload)
    item.is_gold = True
    if annotations_required is None:
        annotations_required = max(
            item.annotations_required, Membership.objects.filter(project=item.project).count()
        )
    if not (item.annotations_count <= annotations_required <= 32767):
        raise InvalidInput(
            f"annotations_required must be from {item.annotations_count} to 32767",
            details={"field": "annotations_required"},
        )
    item.annotations_required = annotations_required
    item.is_open = item.annotations_count < annotations_required
    item.save(update_fields=["is_gold", "gold_payload", "annotations_required", "is_open"])
    return item


@dataclass(frozen=True, slots=True)
class FlagChange:
    user_id: int
    username: str
    flagged: bool
    reason: str


@transaction.atomic
def annotators_flag(*, project: Project) -> list[FlagChange]:
    """Flag members whose gold accuracy (with at least 3 gold answers) or agreement with the others (alpha,
    over at least 5 shared units) is below ``project.min_agreement``; unflag those who have the evidence and
    are above it. Members with too little evidence keep their flag as it is. Returns what changed."""
    quality = project_quality(project=project)
    memberships = {m.user_id: m for m in Membership.objects.select_for_update().filter(project=project)}
    threshold = project.min_agreement
    changes: list[FlagChange] = []
    for person in quality.annotators:
        m = memberships.get(person.user_id)
        if m is None:
            continue
        reasons = []
        evidence = False
        if person.gold_answered >= MIN_GOLD_ANSWERS and person.gold_accuracy is not None:
            evidence = True
            if person.gold_accuracy < threshold:
                reasons.append(f"gold accuracy {person.gold_accuracy:.2f} < {threshold:.2f}")
        if person.shared_units >= MIN_SHARED_UNITS and person.alpha is not None:
            evidence = True
            if person.alpha < threshold:
                reasons.append(f"agreement alpha {person.alpha:.2f} < {threshold:.2f}")
        if not evidence:
            continue
        flagged = bool(reasons)
        if flagged != m.flagged:
            m.flagged = flagged
            m.save(update_fields=["flagged"])
            changes.append(
                FlagChange(
                    user_id=person.user_id,
                    username=person.username,
                    flagged=flagged,
                    reason="; ".join(reasons) or "back above the threshold",
                )
            )
    return changes
