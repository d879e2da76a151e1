"""Export pages (under /exports/): build a snapshot with filters, see counts before writing, download.

Thin: a form → ExportSpec → the same services and selectors as the API and the CLI.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from feedback.errors import FeedbackError, Forbidden
from feedback.exports import selectors
from feedback.exports.policies import access_snapshot, access_snapshot_create, exportable_projects
from feedback.exports.services import (
    DEFAULT_FORMATS,
    SnapshotChangedError,
    snapshot_create,
    snapshot_preview,
    snapshot_spec,
    snapshot_write,
)
from feedback.exports.spec import ExportSpec, ExportSpecError
from feedback.exports.tasks import snapshot_write_task
from feedback.exports.writers import SnapshotSinks
from feedback.models import SnapshotKind, TaskKind
from feedback.policies import Action
from inference.models import ModelVersion


class SnapshotForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Required to create; not for a preview.")
    kind = forms.ChoiceField(choices=SnapshotKind.choices, initial=SnapshotKind.PREFERENCE)
    projects = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    task_kinds = forms.MultipleChoiceField(
        choices=TaskKind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: all.",
    )
    model_versions = forms.MultipleChoiceField(
        required=False, widget=forms.SelectMultiple, help_text="Both sides of a pair must come from these."
    )
    min_agreement = forms.FloatField(min_value=0, max_value=1, initial=0.0)
    min_votes = forms.IntegerField(min_value=1, initial=1)
    include_flagged_annotators = forms.BooleanField(required=False, label="Include flagged annotators")
    include_gold = forms.BooleanField(required=False, label="Include gold items")
    include_truncated = forms.BooleanField(required=False, label="Include truncated candidates (flagged)")
    aggregation = forms.ChoiceField(choices=[("all", "Every vote"), ("majority", "Majority per item")])
    ranking_pairs = forms.ChoiceField(choices=[("all", "All pairs"), ("best_vs_rest", "Best versus rest")])
    ties = forms.ChoiceField(choices=[("drop", "Drop ties"), ("keep", "Keep ties")])
    include_margin = forms.BooleanField(required=False, initial=True, label="Keep margins where known")
    style = forms.ChoiceField(
        choices=[("conversational", "Conversational (chat messages)"), ("standard", "Standard (plain text)")]
    )
    include_sources = forms.BooleanField(required=False, label="Add source ids, votes and agreement")
    license = forms.CharField(max_length=100, initial="other")
    seed = forms.IntegerField(initial=0)
    test_fraction = forms.FloatField(min_value=0, max_value=0.99, initial=0.1)
    formats = forms.MultipleChoiceField(
        choices=[("jsonl", "JSONL"), ("parquet", "Parquet"), ("hf", "datasets folder")],
        initial=list(DEFAULT_FORMATS),
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args: Any, projects: list, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["projects"].choices = [(str(p.pk), f"{p.name} ({p.task_kind})") for p in projects]
        self.fields["model_versions"].choices = [
            (str(v.pk), v.name) for v in ModelVersion.objects.order_by("name").only("id", "name")
        ]

    def spec(self) -> tuple[ExportSpec, int, float]:
        d = self.cleaned_data
        spec = ExportSpec(
            kind=d["kind"],
            project_ids=[int(p) for p in d["projects"]],
            date_from=d["date_from"],
            date_to=d["date_to"],
            task_kinds=d["task_kinds"],
            model_version_ids=[int(v) for v in d["model_versions"]],
            min_agreement=d["min_agreement"],
            min_votes=d["min_votes"],
            include_flagged_annotators=d["include_flagged_annotators"],
            include_gold=d["include_gold"],
            include_truncated=d["include_truncated"],
            aggregation=d["aggregation"],
            ranking_pairs=d["ranking_pairs"],
            ties=d["ties"],
            include_margin=d["include_margin"],
            style=d["style"],
            include_sources=d["include_sources"],
            license=d["license"],
        )
        return spec, d["seed"], d["test_fraction"]


def _http(exc: FeedbackError) -> Exception:
    return PermissionDenied(exc.message) if isinstance(exc, Forbidden) else Http404(exc.message)


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_index(request: HttpRequest) -> HttpResponse:
    projects = exportable_projects(user=request.user)
    snapshots = list(selectors.snapshots_for_user(user=request.user)[:100])
    if not projects and not snapshots:
        raise PermissionDenied("Exports are for project admins (and reviewers, who may read them).")
    form = SnapshotForm(request.POST or None, projects=projects)
    preview = None
    if request.method == "POST":
        if not projects:
            raise PermissionDenied("Only project admins may build snapshots.")
        if form.is_valid():
            try:
                spec, seed, test_fraction = form.spec()
                access_snapshot_create(user=request.user, project_ids=spec.project_ids)
                if request.POST.get("action") == "create":
                    name = form.cleaned_data["name"].strip()
                    if not name:
                        raise ExportSpecError("give the snapshot a name", field="name")
                    snap = snapshot_create(
                        name=name, spec=spec, seed=seed, test_fraction=test_fraction, created_by=request.user
                    )
                    try:  # on the default queue; the detail page shows progress until it is written
                        snapshot_write_task.delay(snap.pk, list(form.cleaned_data["formats"]))
                        messages.success(request, f"Snapshot {snap.pk} created; writing its files.")
                    except Exception as exc:  # an eager run (tests, no broker) raises here
                        messages.error(request, f"Snapshot {snap.pk} failed: {type(exc).__name__}: {exc}")
                    return redirect("exports:detail", snapshot_id=snap.pk)
                preview = snapshot_preview(spec=spec, seed=seed, test_fraction=test_fraction)
            except ExportSpecError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            except FeedbackError as exc:
                raise _http(exc) from None
    return render(
        request,
        "feedback/exports/index.html",
        {"form": form, "preview": preview, "snapshots": snapshots, "can_build": bool(projects)},
    )


@login_required
def snapshot_detail(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    try:
        snap = access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.REVIEW)
        can_download = True
        try:
            access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.EXPORT)
        except Forbidden:
            can_download = False
    except FeedbackError as exc:
        raise _http(exc) from None
    return render(
        request,
        "feedback/exports/detail.html",
        {
            "snap": snap,
            "spec_lines": snapshot_spec(snap).describe(),
            "files": selectors.snapshot_files(snapshot=snap),
            "can_download": can_download,
            "projects": list(snap.projects.order_by("name")),
            "dropped": sorted((snap.stats.get("dropped") or {}).items()),
            "formats": SnapshotSinks.FORMATS,
            "progress": (snap.stats or {}).get("progress") if snap.status == "draft" else None,
        },
    )


@login_required
@require_POST
def snapshot_rewrite(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    try:
        snap = access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.EXPORT)
    except FeedbackError as exc:
        raise _http(exc) from None
    formats = (
        tuple(f for f in request.POST.getlist("formats") if f in SnapshotSinks.FORMATS) or DEFAULT_FORMATS
    )
    try:
        result = snapshot_write(snapshot=snap, formats=formats)
        messages.success(request, f"Written again: content hash {result.content_hash[:16]}… unchanged.")
    except SnapshotChangedError as exc:
        messages.error(request, str(exc))
    return redirect("exports:detail", snapshot_id=snap.pk)


@login_required
def snapshot_file(request: HttpRequest, snapshot_id: int, name: str) -> FileResponse:
    try:
        snap = access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.EXPORT)
        path = selectors.snapshot_file_path(snapshot=snap, name=name)
    except FeedbackError as exc:
        raise _http(exc) from None
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)


@login_required
def snapshot_tar(request: HttpRequest, snapshot_id: int) -> StreamingHttpResponse:
    try:
        snap = access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.EXPORT)
    except FeedbackError as exc:
        raise _http(exc) from None
    if not snap.path:
        raise Http404("this snapshot has not been written yet")
    response = StreamingHttpResponse(
        selectors.snapshot_tar_stream(snapshot=snap), content_type="application/x-tar"
    )
    response["Content-Disposition"] = f'attachment; filename="snapshot-{snap.pk}.tar"'
    return response
