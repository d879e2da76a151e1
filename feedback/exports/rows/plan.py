"""What an export will contain before it is read: its columns and how many derived rows it reads.

The column types here (``MESSAGES``, ``ASSISTANT``…) are the ones the writers know.
"""

from __future__ import annotations

from typing import Any

from feedback.exports.spec import ExportSpec
from feedback.models import Annotation, BinaryLabel, Demonstration, PreferencePair

#: Column types the writers know: chat messages, plain values, and the candidates of a raw row.
MESSAGES, STRING, FLOAT, BOOL, INT, CANDIDATES = "messages", "string", "float", "bool", "int", "candidates"
#: One assistant turn: the value is the text; files hold ``[{"role": "assistant", "content": text}]``.
ASSISTANT = "assistant"

Column = tuple[str, str]


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
