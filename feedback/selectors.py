"""Reads of the feedback domain."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, Sum
from django.utils import timezone

from feedback.models import Annotation, Item, Membership, Project


@dataclass(frozen=True)
class ProjectProgress:
    project: Project
    role: str
    items: int
    annotations_needed: int
    annotations_done: int
    mine_total: int
    mine_today: int

    @property
    def percent(self) -> int:
        return round(100 * self.annotations_done / self.annotations_needed) if self.annotations_needed else 0

    @property
    def remaining(self) -> int:
        return self.annotations_needed - self.annotations_done


def project_progress_for_user(*, user: AbstractBaseUser) -> list[ProjectProgress]:
    today_start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    rows = []
    memberships = Membership.objects.filter(user=user).select_related("project")
    for membership in memberships.order_by("project__name"):
        project, role = membership.project, membership.role
        agg = Item.objects.filter(project=project).aggregate(
            n=Count("id"), need=Sum("annotations_required"), done=Sum("annotations_count")
        )
        mine = Annotation.objects.filter(item__project=project, annotator=user).aggregate(
            total=Count("id"), today=Count("id", filter=Q(created_at__gte=today_start))
        )
        rows.append(
            ProjectProgress(
                project=project,
                role=role,
                items=agg["n"] or 0,
                annotations_needed=agg["need"] or 0,
                annotations_done=agg["done"] or 0,
                mine_total=mine["total"],
                mine_today=mine["today"],
            )
        )
    return rows
