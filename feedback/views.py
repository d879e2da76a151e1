"""Pages. Thin: fetch, authorise, call a selector or service, render."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from feedback.selectors import project_progress_for_user
from inference.models import GenerationJob


@login_required
def home(request: HttpRequest) -> HttpResponse:
    progress = project_progress_for_user(user=request.user)
    jobs = GenerationJob.objects.filter(
        project__in=[p.project for p in progress], status__in=["queued", "running"]
    ).select_related("project")
    return render(request, "feedback/home.html", {"progress": progress, "jobs": jobs})
