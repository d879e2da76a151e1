from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils.text import slugify

from feedback.models import Membership, Project, Role, TaskKind
from feedback.policies import membership_forget


@transaction.atomic
def project_create(
    *,
    name: str,
    task_kind: TaskKind | str,
    responses_per_item: int | None = None,
    annotations_required: int = 1,
    guidelines: str = "",
    **fields: object,
) -> Project:
    kind = TaskKind(task_kind)
    if responses_per_item is None:
        responses_per_item = {TaskKind.PAIRWISE: 2, TaskKind.RANKING: 4, TaskKind.BINARY: 1}[kind]
    project = Project(
        name=name,
        slug=slugify(name)[:200] or "project",
        task_kind=kind,
        responses_per_item=responses_per_item,
        annotations_required=annotations_required,
        guidelines=guidelines,
        **fields,
    )
    project.full_clean()
    project.save()
    return project


@transaction.atomic
def membership_set(*, project: Project, user: AbstractBaseUser, role: Role | str) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": Role(role)}
    )
    membership_forget(project_id=project.pk)
    return membership
