"""Who may do what with training: staff, or admins of the project concerned."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied

from feedback.models import Membership, Project, Role
from training.models import TrainingRun


def can_manage_training(*, user: AbstractBaseUser, project: Project | None) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_staff:
        return True
    if project is None:
        return False
    return Membership.objects.filter(project=project, user=user, role=Role.ADMIN).exists()


def access_training(*, user: AbstractBaseUser, project: Project | None) -> None:
    """Raise PermissionDenied unless the user may start, cancel or watch the project's training."""
    if not can_manage_training(user=user, project=project):
        raise PermissionDenied("Only staff or the project's admins manage its training runs.")


def access_run(*, user: AbstractBaseUser, run: TrainingRun) -> None:
    if run.created_by_id is not None and run.created_by_id == getattr(user, "pk", None):
        return
    access_training(user=user, project=run.project)
