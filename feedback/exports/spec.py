"""What a snapshot holds: the filters and shaping options, validated, and how they become SQL.

Everything that decides the bytes of a snapshot's files lives in :class:`ExportSpec` and is
stored on the snapshot (``DatasetSnapshot.filters``) and in its ``manifest.json``. What the
filters resolved to when the snapshot was made (the last annotation id, the annotators flagged
at that moment) is stored beside it (``DatasetSnapshot.frozen``), so that writing the snapshot
again reads exactly the same rows even after new annotations arrive or flags change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from django.db.models import Q
from django.utils.dateparse import parse_date, parse_datetime

from feedback.models import SnapshotKind, TaskKind

AGGREGATIONS = ("all", "majority")
RANKING_PAIRS = ("all", "best_vs_rest")
TIES = ("drop", "keep")
STYLES = ("conversational", "standard")


class ExportSpecError(ValueError):
    """A filter or option is invalid; ``field`` names it."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _parse_when(value: Any, name: str, *, end: bool) -> str | None:
    """An ISO date or datetime (UTC if naive), normalised to an ISO datetime string."""
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time.max if end else dt.time.min)
    elif isinstance(value, str):
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            if day is None:
                raise ExportSpecError(f"{value!r} is not an ISO date or datetime", field=name)
            moment = dt.datetime.combine(day, dt.time.max if end else dt.time.min)
    else:
        raise ExportSpecError(f"{value!r} is not an ISO date or datetime", field=name)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat()


def _int_list(value: Any, name: str) -> list[int]:
    if value in (None, ""):
        return []
    if isinstance(value, int | str):
        value = [value]
    try:
        out = sorted({int(v) for v in value})
    except (TypeError, ValueError):
        raise ExportSpecError(f"expected a list of ids, got {value!r}", field=name) from None
    return out


@dataclass
class ExportSpec:
    """Filters and shaping options of one snapshot (see the dataset card for what each does)."""

    kind: str = SnapshotKind.PREFERENCE.value
    project_ids: list[int] = field(default_factory=list)
    date_from: str | None = None
    date_to: str | None = None
    task_kinds: list[str] = field(default_factory=list)
    model_version_ids: list[int] = field(default_factory=list)
    min_agreement: float = 0.0
    min_votes: int = 1
    include_flagged_annotators: bool = False
    include_gold: bool = False
    include_truncated: bool = False
    aggregation: str = "all"
    ranking_pairs: str = "all"
    ties: str = "drop"
    include_margin: bool = True
    style: str = "conversational"
    include_sources: bool = False
    license: str = "other"

    def __post_init__(self) -> None:
        if self.kind not in SnapshotKind.values:
            raise ExportSpecError(f"unknown kind {self.kind!r} (one of {SnapshotKind.values})", field="kind")
        self.project_ids = _int_list(self.project_ids, "project_ids")
        if not self.project_ids:
            raise ExportSpecError("choose at least one project", field="project_ids")
        self.model_version_ids = _int_list(self.model_version_ids, "model_version_ids")
        self.date_from = _parse_when(self.date_from, "date_from", end=False)
        self.date_to = _parse_when(self.date_to, "date_to", end=True)
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ExportSpecError("date_from is after date_to", field="date_from")
        kinds = [self.task_kinds] if isinstance(self.task_kinds, str) else list(self.task_kinds or [])
        bad = [k for k in kinds if k not in TaskKind.values]
        if bad:
            raise ExportSpecError(
                f"unknown task kind(s) {bad} (one of {TaskKind.values})", field="task_kinds"
            )
        self.task_kinds = sorted(set(kinds))
        try:
            self.min_agreement = float(self.min_agreement)
            self.min_votes = int(self.min_votes)
        except (TypeError, ValueError):
            raise ExportSpecError("min_agreement must be a number, min_votes an integer") from None
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ExportSpecError("must lie between 0 and 1", field="min_agreement")
        if self.min_votes < 1:
            raise ExportSpecError("must be at least 1", field="min_votes")
        for name, allowed in (
            ("aggregation", AGGREGATIONS),
            ("ranking_pairs", RANKING_PAIRS),
            ("ties", TIES),
            ("style", STYLES),
        ):
            if getattr(self, name) not in allowed:
                raise ExportSpecError(f"{getattr(self, name)!r} is not one of {list(allowed)}", field=name)
        for name in (
            "include_flagged_annotators",
            "include_gold",
            "include_truncated",
            "include_margin",
            "include_sources",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                value = value.strip().lower() in {"1", "true", "yes", "on"}
            setattr(self, name, bool(value))
        self.license = str(self.license or "other").strip()[:100] or "other"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExportSpecError(f"unknown filter(s) {unknown}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # --- SQL -----------------------------------------------------------------------------------
    def annotation_q(self, frozen: dict[str, Any], prefix: str = "", *, item_filters: bool = True) -> Q:
        """Annotation-level filters (projects, cut-off, dates, kinds, gold, flagged annotators).

        ``item_filters=False`` leaves out the item conditions (project, gold) for a query whose item
        ids were already chosen by :meth:`item_q`: no join to the item table per slice.
        """
        p = prefix
        q = Q(**{f"{p}item__project_id__in": self.project_ids}) if item_filters else Q()
        if frozen.get("annotation_id_max") is not None:
            q &= Q(**{f"{p}id__lte": frozen["annotation_id_max"]})
        else:  # nothing was annotated when the snapshot was made
            q &= Q(**{f"{p}id__lt": 0})
        if self.date_from:
            q &= Q(**{f"{p}created_at__gte": dt.datetime.fromisoformat(self.date_from)})
        if self.date_to:
            q &= Q(**{f"{p}created_at__lte": dt.datetime.fromisoformat(self.date_to)})
        if self.task_kinds:
            q &= Q(**{f"{p}kind__in": self.task_kinds})
        if not self.include_gold and item_filters:
            q &= Q(**{f"{p}item__is_gold": False})
        if not self.include_flagged_annotators:
            # per project (a flag is per membership); joins the item only when someone is flagged
            for project_id, user_ids in sorted((frozen.get("excluded_annotators") or {}).items()):
                if user_ids:
                    q &= ~Q(**{f"{p}item__project_id": int(project_id), f"{p}annotator_id__in": user_ids})
        return q

    def item_q(self, prefix: str = "") -> Q:
        """Item-level filters: the projects, and gold items unless included."""
        q = Q(**{f"{prefix}project_id__in": self.project_ids})
        if not self.include_gold:
            q &= Q(**{f"{prefix}is_gold": False})
        return q

    def describe(self) -> list[tuple[str, str]]:
        """Human-readable lines for the dataset card and the UI."""
        out = [
            ("kind", self.kind),
            ("projects", ", ".join(map(str, self.project_ids))),
            ("annotated from", self.date_from or "any time"),
            ("annotated until", self.date_to or "the snapshot's creation"),
            ("task kinds", ", ".join(self.task_kinds) or "all"),
            ("model versions", ", ".join(map(str, self.model_version_ids)) or "all"),
            ("minimum agreement", f"{self.min_agreement:g}"),
            ("minimum votes per item", str(self.min_votes)),
            ("flagged annotators", "included" if self.include_flagged_annotators else "left out"),
            ("gold items", "included" if self.include_gold else "left out"),
            ("truncated candidates", "included (flagged)" if self.include_truncated else "left out"),
            ("aggregation", "every vote" if self.aggregation == "all" else "majority per item"),
            ("ranking pairs", "all pairs" if self.ranking_pairs == "all" else "best versus rest"),
            ("ties", "kept" if self.ties == "keep" else "dropped"),
            ("margins", "kept where known" if self.include_margin else "left out"),
            ("style", self.style),
        ]
        return out
