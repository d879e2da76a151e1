"""Pages for generation jobs: a list with a start form, and a job page with a live progress bar."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from feedback.models import Membership, Project, Role
from inference import policies, selectors, services
from inference.engines.base import SamplingParams
from inference.models import Engine, GenerationJob, ModelVersion, PairingMode


def _manageable_projects(user) -> list[Project]:
    projects = Project.objects.order_by("name")
    if not user.is_staff:
        admin_of = Membership.objects.filter(user=user, role=Role.ADMIN).values("project_id")
        projects = projects.filter(id__in=admin_of)
    return list(projects)


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    projects = _manageable_projects(request.user)
    if not projects:
        raise PermissionDenied("Only staff or project admins manage generation.")
    if request.method == "POST":
        return _job_start(request)
    context = {
        "jobs": selectors.generation_job_list(user=request.user)[:100],
        "projects": projects,
        "versions": ModelVersion.objects.exclude(engine=Engine.EXTERNAL).order_by("name"),
        "pairings": PairingMode.choices,
        "defaults": SamplingParams(),
    }
    return render(request, "inference/jobs.html", context)


def _job_start(request: HttpRequest) -> HttpResponse:
    post = request.POST
    try:
        project = get_object_or_404(Project, pk=int(post.get("project", "0")))
        policies.access_generation(user=request.user, project=project)
        versions = list(ModelVersion.objects.filter(pk__in=[int(v) for v in post.getlist("model_versions")]))
        params = SamplingParams(
            max_new_tokens=int(post.get("max_new_tokens") or 256),
            temperature=float(post.get("temperature") or 0.8),
            top_p=float(post.get("top_p") or 0.95),
        )
        job = services.generation_job_create(
            project=project,
            model_versions=versions,
            n=int(post["n"]) if post.get("n") else None,
            sampling_params=params,
            pairing=post.get("pairing") or PairingMode.SAMPLES,
            chunk_size=int(post.get("chunk_size") or 8),
            created_by=request.user,
        )
    except (services.GenerationJobError, ValueError) as exc:
        messages.error(request, f"The job was not started: {exc}")
        return redirect("generation_jobs")
    messages.success(request, f"Generation job {job.pk} queued.")
    return redirect("generation_job", job_id=job.pk)


@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(GenerationJob.objects.select_related("project"), pk=job_id)
    policies.access_generation(user=request.user, project=job.project)
    context = {
        "job": selectors.generation_job_get(job_id=job.pk),
        "stats": selectors.generation_job_stats(job=job),
        "percent": round(100 * job.progress),
    }
    return render(request, "inference/job.html", context)


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(GenerationJob.objects.select_related("project"), pk=job_id)
    policies.access_generation(user=request.user, project=job.project)
    services.generation_job_cancel(job_id=job.pk)
    messages.info(request, f"Cancel requested for generation job {job.pk}.")
    return redirect("generation_job", job_id=job.pk)


@login_required
@require_POST
def job_resume(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(GenerationJob.objects.select_related("project"), pk=job_id)
    policies.access_generation(user=request.user, project=job.project)
    try:
        services.generation_job_resume(job_id=job.pk, force=request.POST.get("force") == "1")
        messages.success(request, f"Generation job {job.pk} queued again: it generates only what is missing.")
    except services.GenerationJobError as exc:
        messages.error(request, str(exc))
    return redirect("generation_job", job_id=job.pk)
