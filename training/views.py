"""Training pages: runs with progress bars and a start form (with the advisor), a run page with
loss / reward / KL curves (server-rendered SVG) and its lineage, cancel and queue-again buttons."""

from __future__ import annotations

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from feedback.models import DatasetSnapshot, Project
from inference.models import Engine, ModelVersion
from training import documents, policies, selectors, services
from training.models import Method, TrainingRun
from training.plots import line_chart


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    projects = list(selectors.projects_trainable(user=request.user))
    if not projects and not request.user.is_staff:
        raise PermissionDenied("Only staff or project admins manage training.")
    if request.method == "POST":
        return _run_start(request)
    project_id = request.GET.get("project")
    focus = next((p for p in projects if str(p.pk) == project_id), projects[0] if projects else None)
    context = {
        "runs": selectors.runs_visible(user=request.user)[:100],
        "projects": projects,
        "focus": focus,
        "advice": selectors.training_advice(project=focus) if focus else None,
        "snapshots": DatasetSnapshot.objects.filter(status="written").order_by("-id")[:50],
        "versions": ModelVersion.objects.exclude(engine=Engine.EXTERNAL).order_by("name"),
        "methods": Method.choices,
        "schedules": selectors.schedules_for(project=focus) if focus else [],
    }
    return render(request, "training/runs.html", context)


def _run_start(request: HttpRequest) -> HttpResponse:
    post = request.POST
    try:
        project = get_object_or_404(Project, pk=int(post.get("project", "0")))
        policies.access_training(user=request.user, project=project)
        method = Method(post.get("method", ""))
        version = get_object_or_404(ModelVersion, pk=int(post.get("parent_version", "0")))
        config = yaml.safe_load(post.get("config") or "") or {}
        if not isinstance(config, dict):
            raise ValueError("the config must be a YAML mapping of recipe fields")
        snapshot = None
        if method != Method.CPT:
            snapshot = get_object_or_404(DatasetSnapshot, pk=int(post.get("snapshot") or 0))
        if method == Method.PPO and post.get("pipeline") == "1":
            rm, run = services.training_pipeline_create_rm_ppo(
                snapshot=snapshot, parent_version=version, reward_config=config.get("reward"),
                ppo_config=config.get("ppo", config), project=project, created_by=request.user,
            )  # fmt: skip
            messages.success(request, f"Reward run {rm.pk} queued; PPO run {run.pk} starts when it succeeds.")
        else:
            run = services.training_run_create(
                method=method, snapshot=snapshot, parent_version=version, config=config, project=project,
                documents_dir=selectors.documents_dir(project) if method == Method.CPT else None,
                created_by=request.user,
            )  # fmt: skip
            messages.success(request, f"{method.label} run {run.pk} queued.")
    except (services.TrainingRunError, ValueError, yaml.YAMLError) as exc:
        messages.error(request, f"The run was not started: {exc}")
        return redirect("training_runs")
    return redirect("training_run", run_id=run.pk)


@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(
        TrainingRun.objects.select_related("project", "snapshot", "parent_version", "reward_run"), pk=run_id
    )
    policies.access_run(user=request.user, run=run)
    series = selectors.run_metrics_series(run=run)
    context = {
        "run": run,
        "percent": round(100 * run.progress),
        "charts": [line_chart(title, points) for title, points in series.items()],
        "lineage": selectors.run_lineage(run=run),
        "eval": sorted((run.metrics or {}).get("eval", {}).items()),
        "config_yaml": yaml.safe_dump(run.config, sort_keys=False),
        "dependents": run.dependent_runs.all(),
        "live": run.status in ("queued", "running"),
    }
    return render(request, "training/run.html", context)


@login_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("project"), pk=run_id)
    policies.access_run(user=request.user, run=run)
    services.training_run_cancel(run_id=run.pk)
    messages.info(request, f"Cancel requested for run {run.pk}.")
    return redirect("training_run", run_id=run.pk)


@login_required
@require_POST
def run_requeue(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("project"), pk=run_id)
    policies.access_run(user=request.user, run=run)
    try:
        services.training_run_requeue(run_id=run.pk, force=request.POST.get("force") == "1")
        messages.success(request, f"Run {run.pk} queued again: it resumes from its last checkpoint.")
    except services.TrainingRunError as exc:
        messages.error(request, str(exc))
    return redirect("training_run", run_id=run.pk)


@login_required
@require_POST
def documents_upload(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_object_or_404(Project, pk=project_id)
    policies.access_training(user=request.user, project=project)
    files = [(f.name, f.read()) for f in request.FILES.getlist("files")]
    try:
        report = documents.documents_upload(project=project, files=files)
    except documents.DocumentUploadError as exc:
        messages.error(request, f"Nothing was uploaded: {exc}")
    else:
        dup = f"; {len(report.duplicates)} already there" if report.duplicates else ""
        messages.success(
            request, f"Stored {len(report.stored)} file(s) with {report.documents} document(s){dup}."
        )
    return redirect(f"{reverse('training_runs')}?project={project.pk}")
