"""Reads of model versions and generation jobs."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet, Sum

from feedback.models import Candidate, Membership, Role
from inference.models import GenerationJob, ModelVersion


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("parent").order_by("-created_at", "-id")


def generation_job_list(
    *, user: AbstractBaseUser | None = None, project_id: int | None = None
) -> QuerySet[GenerationJob]:
    """Jobs newest first; for a non-staff user only those of projects they administer."""
    jobs = GenerationJob.objects.select_related("project").prefetch_related("model_versions")
    if project_id is not None:
        jobs = jobs.filter(project_id=project_id)
    if user is not None and not user.is_staff:
        admin_of = Membership.objects.filter(user=user, role=Role.ADMIN).values("project_id")
        jobs = jobs.filter(project_id__in=admin_of)
    return jobs.order_by("-created_at", "-id")


def generation_job_get(*, job_id: int) -> GenerationJob:
    return GenerationJob.objects.select_related("project").prefetch_related("model_versions").get(id=job_id)


def generation_job_stats(*, job: GenerationJob) -> dict[str, int]:
    """Candidates the job stored, their completion tokens, and how many hit the length limit."""
    agg = Candidate.objects.filter(generation_job=job).aggregate(
        candidates=Count("id"),
        tokens=Sum("completion_tokens"),
        truncated=Count("id", filter=Q(finish_reason="length")),
    )
    return {k: int(v or 0) for k, v in agg.items()}
