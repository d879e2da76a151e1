"""Who may do what with generation: staff, or admins of the project concerned."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied

from feedback.models import Membership, Project, Role


def can_manage_generation(*, user: AbstractBaseUser, project: Project) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_staff:
        return True
    return Membership.objects.filter(project=project, user=user, role=Role.ADMIN).exists()


def access_generation(*, user: AbstractBaseUser, project: Project) -> None:
    """Raise PermissionDenied unless the user may start, cancel or watch the project's jobs."""
    if not can_manage_generation(user=user, project=project):
        raise PermissionDenied("Only staff or the project's admins manage its generation jobs.")
