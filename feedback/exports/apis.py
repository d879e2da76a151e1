"""REST API of snapshots (under /api/v1/snapshots/): preview counts, create and write, read, download.

One APIView per operation: fetch → authorise (feedback.exports.policies) → service → serialise.
Downloads stream from disk (never read into memory); ``download.tar`` streams the whole folder.
"""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api_support import ErrorSerializer, Pagination
from feedback.errors import Conflict, InvalidInput
from feedback.exports import selectors
from feedback.exports.policies import access_snapshot, access_snapshot_create
from feedback.exports.services import (
    DEFAULT_FORMATS,
    SnapshotChangedError,
    snapshot_create,
    snapshot_mark_failed,
    snapshot_preview,
    snapshot_push_to_hub,
    snapshot_write,
)
from feedback.exports.spec import AGGREGATIONS, RANKING_PAIRS, STYLES, TIES, ExportSpec, ExportSpecError
from feedback.exports.tasks import snapshot_write_task
from feedback.exports.writers import SnapshotSinks
from feedback.models import SnapshotKind, TaskKind
from feedback.policies import Action

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input"),
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated"),
    403: OpenApiResponse(ErrorSerializer, description="Your role does not allow this"),
    404: OpenApiResponse(ErrorSerializer, description="Not found (or not yours to see)"),
}
CONFLICT = {
    409: OpenApiResponse(ErrorSerializer, description="The snapshot's rows changed since it was written")
}


def _invalid(exc: ExportSpecError) -> InvalidInput:
    return InvalidInput(str(exc), details={"field": exc.field} if exc.field else None)


class SpecInputSerializer(serializers.Serializer):
    """The filters and options of a snapshot (see ExportSpec and the dataset card)."""

    kind = serializers.ChoiceField(choices=SnapshotKind.values, default=SnapshotKind.PREFERENCE)
    project_ids = serializers.ListField(child=serializers.IntegerField(), allow_empty=False)
    date_from = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    date_to = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    task_kinds = serializers.ListField(child=serializers.ChoiceField(choices=TaskKind.values), required=False)
    model_version_ids = serializers.ListField(child=serializers.IntegerField(), required=False)
    min_agreement = serializers.FloatField(required=False, min_value=0, max_value=1)
    min_votes = serializers.IntegerField(required=False, min_value=1)
    include_flagged_annotators = serializers.BooleanField(required=False)
    include_gold = serializers.BooleanField(required=False)
    include_truncated = serializers.BooleanField(required=False)
    aggregation = serializers.ChoiceField(choices=AGGREGATIONS, required=False)
    ranking_pairs = serializers.ChoiceField(choices=RANKING_PAIRS, required=False)
    ties = serializers.ChoiceField(choices=TIES, required=False)
    include_margin = serializers.BooleanField(required=False)
    style = serializers.ChoiceField(choices=STYLES, required=False)
    include_sources = serializers.BooleanField(required=False)
    license = serializers.CharField(required=False, max_length=100)
    seed = serializers.IntegerField(required=False, default=0)
    test_fraction = serializers.FloatField(required=False, default=0.1, min_value=0, max_value=0.99)


def _spec(data: dict[str, Any]) -> tuple[ExportSpec, int, float]:
    data = dict(data)
    seed, test_fraction = data.pop("seed", 0), data.pop("test_fraction", 0.1)
    data.pop("name", None)
    data.pop("formats", None)
    data.pop("write", None)
    data.pop("background", None)
    try:
        return ExportSpec.from_dict(data), seed, test_fraction
    except ExportSpecError as exc:
        raise _invalid(exc) from None


class SnapshotOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.CharField()
    project_ids = serializers.SerializerMethodField()
    filters = serializers.JSONField()
    seed = serializers.IntegerField()
    test_fraction = serializers.FloatField()
    row_counts = serializers.JSONField()
    stats = serializers.JSONField()
    content_hash = serializers.CharField()
    file_sizes = serializers.JSONField()
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    written_at = serializers.DateTimeField(allow_null=True)

    def get_project_ids(self, obj) -> list[int]:
        return sorted(p.id for p in obj.projects.all())


class SnapshotListApi(APIView):
    """Snapshots of projects you review or administer, newest first (paginated)."""

    @extend_schema(responses={200: SnapshotOutputSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.snapshots_for_user(user=request.user), request, view=self
        )
        return paginator.get_paginated_response(SnapshotOutputSerializer(page, many=True).data)


class SnapshotPreviewApi(APIView):
    """Rows per split, prompts, agreement and rows left out (by reason) for these filters — nothing is written."""

    class OutputSerializer(serializers.Serializer):
        row_counts = serializers.JSONField()
        stats = serializers.JSONField()
        columns = serializers.ListField(child=serializers.CharField())

    @extend_schema(request=SpecInputSerializer, responses={200: OutputSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        ser = SpecInputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        spec, seed, test_fraction = _spec(ser.validated_data)
        access_snapshot_create(user=request.user, project_ids=spec.project_ids)
        try:
            preview = snapshot_preview(spec=spec, seed=seed, test_fraction=test_fraction)
        except ExportSpecError as exc:
            raise _invalid(exc) from None
        return Response(self.OutputSerializer(preview).data)


class SnapshotCreateApi(APIView):
    """Create a snapshot (freezing its filters) and, unless ``write`` is false, write its files."""

    class InputSerializer(SpecInputSerializer):
        name = serializers.CharField(max_length=200)
        formats = serializers.ListField(
            child=serializers.ChoiceField(choices=SnapshotSinks.FORMATS),
            required=False,
            default=list(DEFAULT_FORMATS),
        )
        write = serializers.BooleanField(required=False, default=True)
        background = serializers.BooleanField(
            required=False, default=False, help_text="Write on the Celery default queue (answer 202 at once)."
        )

    @extend_schema(request=InputSerializer, responses={201: SnapshotOutputSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        spec, seed, test_fraction = _spec(data)
        access_snapshot_create(user=request.user, project_ids=spec.project_ids)
        try:
            snap = snapshot_create(
                name=data["name"], spec=spec, seed=seed, test_fraction=test_fraction, created_by=request.user
            )
        except ExportSpecError as exc:
            raise _invalid(exc) from None
        if data["write"] and data["background"]:
            snapshot_write_task.delay(snap.pk, list(data["formats"]) or list(DEFAULT_FORMATS))
            snap.refresh_from_db()
            return Response(SnapshotOutputSerializer(snap).data, status=status.HTTP_202_ACCEPTED)
        if data["write"]:
            try:
                snapshot_write(snapshot=snap, formats=tuple(data["formats"]) or DEFAULT_FORMATS)
            except Exception as exc:
                snapshot_mark_failed(snapshot=snap, error=f"{type(exc).__name__}: {exc}")
                raise
        snap.refresh_from_db()
        return Response(SnapshotOutputSerializer(snap).data, status=status.HTTP_201_CREATED)


class SnapshotDetailApi(APIView):
    """One snapshot: filters, counts, agreement, hash, and its files."""

    class OutputSerializer(SnapshotOutputSerializer):
        files = serializers.SerializerMethodField()

        def get_files(self, obj) -> list[dict[str, Any]]:
            return [{"name": n, "bytes": b} for n, b in selectors.snapshot_files(snapshot=obj)]

    @extend_schema(responses={200: OutputSerializer, **ERRORS})
    def get(self, request: Request, snapshot_id: int) -> Response:
        snap = access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.REVIEW)
        return Response(self.OutputSerializer(snap).data)


class SnapshotWriteApi(APIView):
    """Write (or write again) a snapshot's files. A written snapshot must come out byte-identical: if its rows
    changed since, the answer is 409 and the files already there are kept."""

    class InputSerializer(serializers.Serializer):
        formats = serializers.ListField(
            child=serializers.ChoiceField(choices=SnapshotSinks.FORMATS),
            required=False,
            default=list(DEFAULT_FORMATS),
        )

    @extend_schema(request=InputSerializer, responses={200: SnapshotOutputSerializer, **ERRORS, **CONFLICT})
    def post(self, request: Request, snapshot_id: int) -> Response:
        snap = access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.EXPORT)
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            snapshot_write(snapshot=snap, formats=tuple(ser.validated_data["formats"]) or DEFAULT_FORMATS)
        except SnapshotChangedError as exc:
            raise Conflict(str(exc), code="snapshot_changed") from None
        snap.refresh_from_db()
        return Response(SnapshotOutputSerializer(snap).data)


class SnapshotFileApi(APIView):
    """Download one file of a written snapshot (streamed): train.jsonl, test.parquet, manifest.json, hf/…"""

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **ERRORS})
    def get(self, request: Request, snapshot_id: int, name: str) -> FileResponse:
        snap = access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.EXPORT)
        path = selectors.snapshot_file_path(snapshot=snap, name=name)
        response = FileResponse(path.open("rb"), as_attachment=True, filename=path.name)
        response["X-Content-Hash"] = snap.content_hash
        return response


class SnapshotTarApi(APIView):
    """Download the whole snapshot folder as one tar, streamed."""

    @extend_schema(responses={(200, "application/x-tar"): OpenApiTypes.BINARY, **ERRORS})
    def get(self, request: Request, snapshot_id: int) -> StreamingHttpResponse:
        snap = access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.EXPORT)
        if not snap.path:
            raise InvalidInput("this snapshot has not been written yet", code="snapshot_not_written")
        response = StreamingHttpResponse(
            selectors.snapshot_tar_stream(snapshot=snap), content_type="application/x-tar"
        )
        response["Content-Disposition"] = f'attachment; filename="snapshot-{snap.pk}.tar"'
        response["X-Content-Hash"] = snap.content_hash
        return response


class SnapshotPushApi(APIView):
    """Upload the snapshot's ``datasets`` folder to the Hugging Face Hub (only when HF_TOKEN is configured)."""

    class InputSerializer(serializers.Serializer):
        repo_id = serializers.RegexField(r"^[\w.-]+/[\w.-]+$", max_length=200)
        private = serializers.BooleanField(required=False, default=True)

    @extend_schema(request=InputSerializer, responses={200: OpenApiTypes.OBJECT, **ERRORS})
    def post(self, request: Request, snapshot_id: int) -> Response:
        snap = access_snapshot(user=request.user, snapshot_id=snapshot_id, action=Action.EXPORT)
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            url = snapshot_push_to_hub(
                snapshot=snap, repo_id=ser.validated_data["repo_id"], private=ser.validated_data["private"]
            )
        except ExportSpecError as exc:
            raise _invalid(exc) from None
        return Response({"url": url})
