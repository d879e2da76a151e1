"""Reads of the feedback domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from feedback.models import Annotation, Item, Lease, Membership, Project, Skip


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


# ---- annotate pages (issue 3) ----------------------------------------------------------------


def membership_by_slug(*, slug: str, user: AbstractBaseUser) -> Membership | None:
    """The user's membership in the project with this slug, project loaded (one query)."""
    return Membership.objects.select_related("project").filter(project__slug=slug, user_id=user.pk).first()


@dataclass(frozen=True)
class AnnotatorRecent:
    """For the annotate page: the user's count today, and their last annotation if it can still be undone."""

    today: int
    undoable_id: int | None
    undoable_until: datetime | None


def annotator_recent(*, project: Project, user: AbstractBaseUser) -> AnnotatorRecent:
    """One aggregate query. Ids grow with time, so the newest annotation in the window has the largest id."""
    now = timezone.now()
    today_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = now - timedelta(seconds=project.undo_window_seconds)
    in_window = Q(created_at__gte=since)
    row = Annotation.objects.filter(
        annotator=user, item__project=project, created_at__gte=min(today_start, since)
    ).aggregate(
        today=Count("id", filter=Q(created_at__gte=today_start)),
        last_id=Max("id", filter=in_window),
        last_at=Max("created_at", filter=in_window),
    )
    last_id = row["last_id"] if project.undo_window_seconds else None
    until = row["last_at"] + timedelta(seconds=project.undo_window_seconds) if last_id else None
    return AnnotatorRecent(today=row["today"] or 0, undoable_id=last_id, undoable_until=until)


def lease_live_get(*, lease_id: int, project: Project, user: AbstractBaseUser) -> Lease | None:
    """The user's live lease by id in this project (with item and prompt), or None."""
    lease = (
        Lease.objects.filter(
            pk=lease_id, annotator=user, item__project=project, expires_at__gt=timezone.now()
        )
        .select_related("item__prompt")
        .first()
    )
    if lease is not None:
        lease.item.project = project
    return lease


# ---- distribution and the REST API (issue 4) ----------------------------------------------------------------


def annotations_of_user(*, user: AbstractBaseUser, project_id: int | None = None) -> QuerySet[Annotation]:
    """The user's own annotations, newest first."""
    qs = Annotation.objects.filter(annotator=user).select_related("item").order_by("-created_at", "-id")
    return qs if project_id is None else qs.filter(item__project_id=project_id)


def annotations_of_project(*, project: Project, annotator_id: int | None = None) -> QuerySet[Annotation]:
    """Everyone's annotations in the project (for reviewers and admins), newest first."""
    qs = (
        Annotation.objects.filter(item__project=project)
        .select_related("item", "annotator")
        .order_by("-created_at", "-id")
    )
    return qs if annotator_id is None else qs.filter(annotator_id=annotator_id)


@dataclass(frozen=True)
class AnnotatorCount:
    user_id: int
    username: str
    role: str
    flagged: bool
    annotations: int
    skips: int
    live_leases: int
    median_time_ms: int | None


@dataclass(frozen=True)
class ProjectStats:
    project: Project
    items: int
    items_open: int
    items_done: int
    gold_items: int
    annotations_needed: int
    annotations_done: int
    live_leases: int
    skips: int
    annotators: list[AnnotatorCount]


def project_stats(*, project: Project) -> ProjectStats:
    now = timezone.now()
    items = Item.objects.filter(project=project).aggregate(
        n=Count("id"),
        open=Count("id", filter=Q(is_open=True)),
        gold=Count("id", filter=Q(is_gold=True)),
        need=Sum("annotations_required"),
        done=Sum("annotations_count"),
    )
    live = Lease.objects.filter(item__project=project, expires_at__gt=now)
    per_user_ann = dict(
        Annotation.objects.filter(item__project=project)
        .values("annotator_id")
        .annotate(n=Count("id"))
        .values_list("annotator_id", "n")
    )
    per_user_skip = dict(
        Skip.objects.filter(item__project=project)
        .values("annotator_id")
        .annotate(n=Count("id"))
        .values_list("annotator_id", "n")
    )
    per_user_live = dict(live.values("annotator_id").annotate(n=Count("id")).values_list("annotator_id", "n"))
    times: dict[int, list[int]] = {}
    for uid, ms in Annotation.objects.filter(item__project=project).values_list(
        "annotator_id", "time_spent_ms"
    ):
        times.setdefault(uid, []).append(ms)
    members = Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    rows = []
    for m in members:
        t = sorted(times.get(m.user_id, []))
        rows.append(
            AnnotatorCount(
                user_id=m.user_id,
                username=m.user.get_username(),
                role=m.role,
                flagged=m.flagged,
                annotations=per_user_ann.get(m.user_id, 0),
                skips=per_user_skip.get(m.user_id, 0),
                live_leases=per_user_live.get(m.user_id, 0),
                median_time_ms=t[len(t) // 2] if t else None,
            )
        )
    return ProjectStats(
        project=project,
        items=items["n"] or 0,
        items_open=items["open"] or 0,
        items_done=(items["n"] or 0) - (items["open"] or 0),
        gold_items=items["gold"] or 0,
        annotations_needed=items["need"] or 0,
        annotations_done=items["done"] or 0,
        live_leases=sum(per_user_live.values()),
        skips=sum(per_user_skip.values()),
        annotators=rows,
    )


def flagged_annotator_ids(*, project: Project) -> set[int]:
    """Annotators below the quality threshold (left out of exports and the leaderboard by default)."""
    return set(Membership.objects.filter(project=project, flagged=True).values_list("user_id", flat=True))
