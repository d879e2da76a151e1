"""Import endpoints (admin): prompts, and responses made elsewhere, from an uploaded .jsonl/.csv file or JSON
rows."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api_support import ERRORS
from feedback.errors import InvalidInput
from feedback.policies import Action, access_project
from feedback.services.imports import candidates_import_file, prompts_import_file


class _ImportInput(serializers.Serializer):
    file = serializers.FileField(required=False, help_text="A .jsonl or .csv file (multipart upload).")
    rows = serializers.ListField(
        child=serializers.DictField(), required=False, help_text="Or the records themselves, as JSON."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("file")) == bool(attrs.get("rows")):
            raise serializers.ValidationError("send either a file or rows (not both)")
        return attrs


def _as_file(validated: dict[str, Any], folder: str) -> tuple[Path, str]:
    """The upload (or the JSON rows, one per line) as a file the CLI's readers understand."""
    upload = validated.get("file")
    if upload is not None:
        suffix = Path(upload.name).suffix.lower()
        if suffix not in {".jsonl", ".ndjson", ".json", ".csv", ".tsv"}:
            raise InvalidInput(f"{upload.name}: upload a .jsonl or .csv file", details={"field": "file"})
        path = Path(folder) / f"upload{suffix}"
        with path.open("wb") as fh:
            for chunk in upload.chunks():
                fh.write(chunk)
        return path, upload.name
    path = Path(folder) / "rows.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for row in validated["rows"]:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path, "api rows"


class PromptImportApi(APIView):
    """Import prompts (admin): all or nothing; duplicates dropped; PII handled by the project's policy.
    A bad row refuses the whole import with its line (JSON rows: line N is row N) and field."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class InputSerializer(_ImportInput):
        pass

    class OutputSerializer(serializers.Serializer):
        import_id = serializers.IntegerField(source="pk")
        rows_read = serializers.IntegerField()
        rows_imported = serializers.IntegerField()
        duplicates_dropped = serializers.IntegerField()
        pii_flagged = serializers.IntegerField()
        pii_redacted = serializers.IntegerField()
        pii_dropped = serializers.IntegerField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer, **ERRORS})
    def post(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.MANAGE)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with tempfile.TemporaryDirectory() as folder:
            path, _source = _as_file(serializer.validated_data, folder)
            record = prompts_import_file(project=m.project, path=path, created_by=request.user)
        return Response(self.OutputSerializer(record).data, status=status.HTTP_201_CREATED)


class CandidateImportApi(APIView):
    """Import responses made elsewhere (admin): each row has the prompt (or messages), a response and a model
    (or give `model` for all). All or nothing; items are built from the new candidates."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class InputSerializer(_ImportInput):
        model = serializers.CharField(required=False, max_length=200)

    class OutputSerializer(serializers.Serializer):
        rows_read = serializers.IntegerField()
        candidates_created = serializers.IntegerField()
        duplicates_dropped = serializers.IntegerField()
        prompts_created = serializers.IntegerField()
        prompts_dropped_pii = serializers.IntegerField()
        items_created = serializers.IntegerField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer, **ERRORS})
    def post(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.MANAGE)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with tempfile.TemporaryDirectory() as folder:
            path, _source = _as_file(serializer.validated_data, folder)
            report = candidates_import_file(
                project=m.project,
                path=path,
                model_name=serializer.validated_data.get("model"),
                created_by=request.user,
            )
        return Response(self.OutputSerializer(report).data, status=status.HTTP_201_CREATED)
