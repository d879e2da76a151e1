"""Changing a project's settings after it was created."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from feedback.models import Item, Project
from feedback.policies import membership_forget

EDITABLE = {
    "guidelines",
    "annotations_required",
    "lease_ttl_seconds",
    "assignment_order",
    "allow_ties",
    "gold_rate",
    "undo_window_seconds",
    "min_agreement",
    "pii_policy",
}


@transaction.atomic
def project_update(*, project: Project, **fields: Any) -> Project:
    """Update editable settings (task kind and responses per item are fixed). A new annotations_required
    applies to the project's open non-gold items too (never below what an item already has)."""
    unknown = set(fields) - EDITABLE
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    for name, value in fields.items():
        setattr(project, name, value)
    project.full_clean()
    project.save(update_fields=sorted(fields) or None)
    membership_forget(project_id=project.pk)  # cached memberships carry the project's settings
    if "annotations_required" in fields:
        required = fields["annotations_required"]
        items = Item.objects.filter(project=project, is_gold=False)
        items.filter(annotations_count__lte=required).update(annotations_required=required)
        items.filter(annotations_count__lt=required).update(is_open=True)
        items.filter(annotations_count__gte=required).update(is_open=False)
    return project
