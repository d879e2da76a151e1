"""Who may build, read and download snapshots, on top of feedback.policies (roles per project).

A snapshot spans projects, so every check covers each of them: building or downloading needs the
export right (admin) in every project it reads; seeing that it exists (name, counts, filters) needs
the review right (reviewer or admin) in every one. Annotators never see snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser

from feedback.errors import Forbidden, NotFound
from feedback.models import DatasetSnapshot, Membership, Project
from feedback.policies import Action, access_project, can


def access_snapshot_create(*, user: AbstractBaseUser, project_ids: Iterable[int]) -> list[Project]:
    """The projects, if the user may export from every one of them."""
    ids = sorted(set(project_ids))
    if not ids:
        raise Forbidden("choose at least one project to export", code="no_projects")
    return [access_project(user=user, project_id=pid, action=Action.EXPORT).project for pid in ids]


def access_snapshot(
    *, user: AbstractBaseUser, snapshot_id: int, action: Action = Action.REVIEW
) -> DatasetSnapshot:
    """The snapshot, if the user's role in each of its projects allows ``action`` (REVIEW to read, EXPORT to
    download or write). A snapshot of projects the user is not in looks absent (404)."""
    if not user.is_authenticated:
        raise Forbidden("log in first", code="not_authenticated")
    snapshot = DatasetSnapshot.objects.filter(pk=snapshot_id).first()
    if snapshot is None:
        raise NotFound(f"no snapshot {snapshot_id}", code="snapshot_not_found")
    if getattr(user, "is_superuser", False):
        return snapshot
    project_ids = set(snapshot.projects.values_list("id", flat=True))
    roles = dict(
        Membership.objects.filter(user_id=user.pk, project_id__in=project_ids).values_list(
            "project_id", "role"
        )
    )
    if set(roles) != project_ids or not all(can(r, Action.REVIEW) for r in roles.values()):
        raise NotFound(f"no snapshot {snapshot_id} among those you may read", code="snapshot_not_found")
    if not all(can(r, action) for r in roles.values()):
        raise Forbidden(
            f"your role in the snapshot's projects may not {action.value}",
            code="role_forbidden",
            details={"action": action.value},
        )
    return snapshot


def exportable_projects(*, user: AbstractBaseUser) -> list[Project]:
    """Projects the user may export from (for the build form)."""
    if getattr(user, "is_superuser", False):
        return list(Project.objects.order_by("name"))
    ids = [
        pid
        for pid, role in Membership.objects.filter(user_id=user.pk).values_list("project_id", "role")
        if can(role, Action.EXPORT)
    ]
    return list(Project.objects.filter(id__in=ids).order_by("name"))
