"""Pages. Thin: fetch, authorise, call a selector or service, render.

The annotate page is rendered on the server (responses as sanitised markdown); its script posts the
judgement as JSON to `annotate_submit` (session + CSRF) with a key per lease, so a retried submit never
makes a second annotation. Skip and undo are plain form posts that redirect back to the page.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from feedback.errors import FeedbackError
from feedback.models import Candidate, Project, TaskKind
from feedback.policies import ALLOWED, Action, can
from feedback.rendering import render_markdown
from feedback.selectors import (
    AnnotatorRecent,
    annotator_recent,
    lease_live_get,
    membership_by_slug,
    project_progress_for_user,
    project_stats,
)
from feedback.services import distribution
from feedback.services.payloads import FLAGS
from inference.models import GenerationJob

# Model output must never run in the page: scripts only from this origin (the page has no inline
# script), nothing fetched from elsewhere, no plugins, no framing by other sites.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    ]
)

FLAG_LABELS = {"harmful": "Harmful", "pii": "Contains personal data", "broken": "Broken output"}
FLAG_CHOICES = [(f, FLAG_LABELS.get(f, f)) for f in FLAGS]
PAIRWISE_CHOICES = [
    ("A", "A is better", "1"),
    ("B", "B is better", "2"),
    ("tie", "Tie", "3"),
    ("both_bad", "Both bad", "4"),
]
# (tag, label, the vote it explains): a card shows the tags of the vote it was given.
REASON_CHOICES = [
    ("correct", "Correct", "up"),
    ("clear", "Clear", "up"),
    ("concise", "Concise", "up"),
    ("incorrect", "Incorrect", "down"),
    ("unhelpful", "Unhelpful", "down"),
    ("unsafe", "Unsafe", "down"),
    ("too_long", "Too long", "down"),
    ("off_topic", "Off topic", "down"),
]
SKIP_REASONS = [
    ("unsure", "I can't judge this well"),
    ("unclear_prompt", "The prompt is unclear"),
    ("identical", "The responses are the same"),
    ("broken", "Something is broken"),
    ("other", "Another reason"),
]
FOLD_PX = 256  # responses taller than this start folded


def with_csp(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return wrapped


def _project_for(request: HttpRequest, slug: str, action: Action) -> Project:
    """The project if the user's role in it allows `action` (policies.py), else 404 / 403. One query."""
    membership = membership_by_slug(slug=slug, user=request.user)
    if membership is None:
        if request.user.is_superuser:  # acts as admin of every project (policies.py)
            return get_object_or_404(Project, slug=slug)
        raise Http404(f"No project {slug!r} among yours.")
    if not can(membership.role, action) and not request.user.is_superuser:
        raise PermissionDenied(f"Your role in this project ({membership.role}) may not {action.value}.")
    return membership.project


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    progress = project_progress_for_user(user=request.user)
    jobs = GenerationJob.objects.filter(
        project__in=[p.project for p in progress], status__in=["queued", "running"]
    ).select_related("project")
    return render(
        request,
        "feedback/home.html",
        {"progress": progress, "jobs": jobs, "review_roles": set(ALLOWED[Action.REVIEW])},
    )


@dataclass(frozen=True)
class CandidateView:
    id: int
    label: str
    html: str
    truncated: bool


def _candidate_views(project: Project, candidates: list[Candidate]) -> list[CandidateView]:
    pairwise = project.task_kind == TaskKind.PAIRWISE
    return [
        CandidateView(
            id=c.pk,
            label="AB"[i] if pairwise and i < 2 else str(i + 1),
            html=render_markdown(c.text),
            truncated=c.truncated,
        )
        for i, c in enumerate(candidates)
    ]


def _undo_context(recent: AnnotatorRecent) -> dict[str, Any] | None:
    if recent.undoable_id is None or recent.undoable_until is None:
        return None
    left = int((recent.undoable_until - timezone.now()).total_seconds())
    if left <= 0:
        return None
    return {
        "annotation_id": recent.undoable_id,
        "until_iso": recent.undoable_until.isoformat(),
        "seconds_left": left,
    }


@login_required
@require_GET
@with_csp
def annotate(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for(request, slug, Action.ANNOTATE)
    recent = annotator_recent(project=project, user=request.user)
    undo = _undo_context(recent)
    config: dict[str, Any] = {
        "project": project.slug,
        "kind": project.task_kind,
        "item": None,
        "lease": None,
        "csrf": get_token(request),
        "fold_px": FOLD_PX,
        "urls": {
            "submit": reverse("annotate_submit", args=[project.slug]),
            "next": reverse("annotate", args=[project.slug]),
        },
    }
    guidelines_html = render_markdown(project.guidelines)
    lease = None
    if request.GET.get("lease", "").isdigit():  # after an undo: show that item again, whatever else is held
        lease = lease_live_get(lease_id=int(request.GET["lease"]), project=project, user=request.user)
    try:
        if lease is None:
            lease = distribution.item_next(project=project, user=request.user)
    except FeedbackError as exc:
        return render(
            request,
            "feedback/annotate_empty.html",
            {
                "project": project,
                "reason": exc.message,
                "undo": undo,
                "config": config,
                "guidelines_html": guidelines_html,
            },
            status=exc.http_status,
        )
    if lease is None:
        return render(
            request,
            "feedback/annotate_empty.html",
            {
                "project": project,
                "reason": "Every item is done, held by someone else, or already judged or skipped by you.",
                "undo": undo,
                "config": config,
                "guidelines_html": guidelines_html,
            },
        )
    item = lease.item
    candidates = _candidate_views(project, distribution.lease_candidates(lease=lease))
    prompt_messages = item.prompt.messages or [{"role": "user", "content": item.prompt.text}]
    config.update(
        item=item.pk,
        lease=lease.pk,
        order_shown=[c.id for c in candidates],
        allow_ties=project.allow_ties,
        lease_expires_at=lease.expires_at.isoformat(),
    )
    context = {
        "project": project,
        "item": item,
        "prompt_messages": [
            {"role": m.get("role", "user"), "html": render_markdown(m.get("content", ""))}
            for m in prompt_messages
        ],
        "candidates": candidates,
        "guidelines_html": guidelines_html,
        "undo": undo,
        "mine_today": recent.today,
        "flag_choices": FLAG_CHOICES,
        "pairwise_choices": [c for c in PAIRWISE_CHOICES if c[0] != "tie" or project.allow_ties],
        "reason_choices": REASON_CHOICES,
        "skip_reasons": SKIP_REASONS,
        "config": config,
    }
    return render(request, "feedback/annotate.html", context)


def _json_error(code: str, message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"code": code, "message": message}, status=status)


@require_POST
def annotate_submit(request: HttpRequest, slug: str) -> JsonResponse:
    # JSON in, JSON out: a lapsed session gets a 401 the page can show (a redirect to the login page
    # would look like success to fetch, and the judgement would be lost).
    if not request.user.is_authenticated:
        return _json_error(
            "not_authenticated", "Your session has ended: log in again in another tab, then submit.", 401
        )
    try:
        project = _project_for(request, slug, Action.ANNOTATE)
    except Http404 as exc:
        return _json_error("not_found", str(exc), 404)
    except PermissionDenied as exc:
        return _json_error("forbidden", str(exc), 403)
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _json_error("invalid", "The request body is not JSON.")
    if not isinstance(body, dict):
        return _json_error("invalid", "The request body must be a JSON object.")
    item_id = body.get("item_id")
    if isinstance(item_id, bool) or not isinstance(item_id, int):
        return _json_error("invalid", "item_id must be an integer.")
    if not project.items.filter(pk=item_id).exists():
        return _json_error("not_found", f"Item {item_id} is not in project {project.slug}.", 404)
    try:
        annotation, created = distribution.annotation_submit(
            user=request.user,
            item_id=item_id,
            payload=body.get("payload"),
            idempotency_key=body.get("idempotency_key") or "",
            time_spent_ms=body.get("time_spent_ms", 0),
            comment=body.get("comment") or "",
            flags=body.get("flags") or [],
            demonstration=body.get("demonstration") or "",
        )
    except FeedbackError as exc:
        return JsonResponse(exc.as_dict(), status=exc.http_status)
    return JsonResponse(
        {
            "annotation_id": annotation.pk,
            "created": created,
            "next": reverse("annotate", args=[project.slug]),
        },
        status=201 if created else 200,
    )


@login_required
@require_POST
def annotate_skip(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for(request, slug, Action.ANNOTATE)
    reasons = dict(SKIP_REASONS)
    code = request.POST.get("reason", "")
    detail = request.POST.get("detail", "").strip()
    reason = reasons.get(code, "")
    if not reason and not detail:
        messages.error(request, "Say why you skip the item.")
        return redirect("annotate", slug=project.slug)
    text = f"{code}: {detail}" if code and detail else (code or detail)
    try:
        item_id = int(request.POST.get("item_id", ""))
    except ValueError:
        messages.error(request, "No item to skip.")
        return redirect("annotate", slug=project.slug)
    if not project.items.filter(pk=item_id).exists():
        messages.error(request, f"Item {item_id} is not in this project.")
        return redirect("annotate", slug=project.slug)
    try:
        distribution.item_skip(user=request.user, item_id=item_id, reason=text[:500])
    except FeedbackError as exc:
        messages.error(request, exc.message)
    else:
        messages.info(request, f"Skipped item {item_id}.")
    return redirect("annotate", slug=project.slug)


@login_required
@require_POST
def annotate_undo(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for(request, slug, Action.ANNOTATE)
    try:
        annotation_id = int(request.POST.get("annotation_id", ""))
    except ValueError:
        messages.error(request, "No submission to undo.")
        return redirect("annotate", slug=project.slug)
    try:
        lease = distribution.annotation_undo(user=request.user, annotation_id=annotation_id)
    except FeedbackError as exc:
        messages.error(request, exc.message)
        return redirect("annotate", slug=project.slug)
    messages.info(request, "Your last submission was undone: judge the item again, or skip it.")
    return redirect(f"{reverse('annotate', args=[project.slug])}?lease={lease.pk}")


@login_required
@require_GET
@with_csp
def project_progress(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for(request, slug, Action.REVIEW)
    stats = project_stats(project=project)
    rows = [
        (a, "—" if a.median_time_ms is None else f"{a.median_time_ms / 1000:.1f} s") for a in stats.annotators
    ]
    return render(request, "feedback/progress.html", {"project": project, "stats": stats, "rows": rows})
