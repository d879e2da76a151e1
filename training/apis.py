"""REST API for training runs, the advisor and schedules (mounted under /api/v1/).

One APIView per operation: fetch → authorise → service → serialise.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api_support import CONFLICT, ERRORS
from feedback.errors import Conflict, InvalidInput
from feedback.models import DatasetSnapshot, Project
from inference.models import ModelVersion
from training import documents, policies, selectors, services
from training.models import Method, TrainingRun


class TrainingRunOutput(serializers.ModelSerializer):
    progress = serializers.FloatField()
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id", "method", "project", "snapshot", "parent_version", "reward_run", "schedule", "config",
            "status", "cancel_requested", "progress", "progress_step", "progress_total", "metrics", "error",
            "log_tail", "attempts", "output_dir", "model_version", "created_at", "started_at", "finished_at",
            "heartbeat_at",
        ]  # fmt: skip

    def get_model_version(self, run: TrainingRun) -> int | None:
        version = getattr(run, "model_version", None)
        return version.pk if version is not None else None


class TrainingRunListApi(APIView):
    class Pagination(PageNumberPagination):
        page_size = 50

    class FilterSerializer(serializers.Serializer):
        project = serializers.IntegerField(required=False)

    @extend_schema(parameters=[FilterSerializer], responses={200: TrainingRunOutput(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        runs = selectors.runs_visible(user=request.user)
        if filters.validated_data.get("project") is not None:
            runs = runs.filter(project_id=filters.validated_data["project"])
        paginator = self.Pagination()
        page = paginator.paginate_queryset(runs, request, view=self)
        return paginator.get_paginated_response(TrainingRunOutput(page, many=True).data)


class TrainingRunCreateApi(APIView):
    class Input(serializers.Serializer):
        method = serializers.ChoiceField(choices=Method.choices)
        project = serializers.IntegerField()
        parent_version = serializers.IntegerField()
        snapshot = serializers.IntegerField(required=False, allow_null=True)
        config = serializers.DictField(required=False, default=dict)
        pipeline = serializers.BooleanField(required=False, default=False, help_text="PPO: reward run first")
        reward_config = serializers.DictField(required=False, default=dict)
        timeout_s = serializers.IntegerField(required=False, default=0, min_value=0)

    @extend_schema(request=Input, responses={201: TrainingRunOutput, **ERRORS})
    def post(self, request: Request) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        project = get_object_or_404(Project, pk=d["project"])
        policies.access_training(user=request.user, project=project)
        version = get_object_or_404(ModelVersion, pk=d["parent_version"])
        snapshot = get_object_or_404(DatasetSnapshot, pk=d["snapshot"]) if d.get("snapshot") else None
        try:
            if d["method"] == Method.PPO and d["pipeline"]:
                if snapshot is None:
                    raise services.TrainingRunError("the RM → PPO pipeline needs a preference snapshot")
                _, run = services.training_pipeline_create_rm_ppo(
                    snapshot=snapshot, parent_version=version, reward_config=d["reward_config"],
                    ppo_config=d["config"], project=project, created_by=request.user,
                )  # fmt: skip
            else:
                run = services.training_run_create(
                    method=d["method"], snapshot=snapshot, parent_version=version, config=d["config"],
                    project=project, created_by=request.user, timeout_s=d["timeout_s"],
                    documents_dir=selectors.documents_dir(project) if d["method"] == Method.CPT else None,
                )  # fmt: skip
        except services.TrainingRunError as exc:
            raise InvalidInput(str(exc), code="training_invalid") from exc
        return Response(TrainingRunOutput(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetailApi(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS})
    def get(self, request: Request, run_id: int) -> Response:
        run = get_object_or_404(TrainingRun, pk=run_id)
        policies.access_run(user=request.user, run=run)
        data = TrainingRunOutput(run).data
        data["curves"] = selectors.run_metrics_series(run=run)
        return Response(data)


class TrainingRunCancelApi(APIView):
    @extend_schema(request=None, responses={200: TrainingRunOutput, **ERRORS})
    def post(self, request: Request, run_id: int) -> Response:
        run = get_object_or_404(TrainingRun, pk=run_id)
        policies.access_run(user=request.user, run=run)
        return Response(TrainingRunOutput(services.training_run_cancel(run_id=run.pk)).data)


class TrainingRunRequeueApi(APIView):
    class Input(serializers.Serializer):
        force = serializers.BooleanField(required=False, default=False)

    @extend_schema(request=Input, responses={200: TrainingRunOutput, **ERRORS, **CONFLICT})
    def post(self, request: Request, run_id: int) -> Response:
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        run = get_object_or_404(TrainingRun, pk=run_id)
        policies.access_run(user=request.user, run=run)
        try:
            run = services.training_run_requeue(run_id=run.pk, force=data.validated_data["force"])
        except services.TrainingRunError as exc:
            raise Conflict(str(exc), code="training_not_requeueable") from exc
        return Response(TrainingRunOutput(run).data)


class TrainingAdviceApi(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        project = get_object_or_404(Project, pk=project_id)
        policies.access_training(user=request.user, project=project)
        return Response(selectors.training_advice(project=project).as_dict())


class ProjectDocumentsApi(APIView):
    """Documents for continued pretraining (``cpt`` runs read the project's documents folder)."""

    parser_classes = [MultiPartParser, FormParser]

    class Input(serializers.Serializer):
        files = serializers.ListField(
            child=serializers.FileField(), help_text=".txt, .md or .jsonl files (multipart, field 'files')"
        )

    class Output(serializers.Serializer):
        stored = serializers.ListField(child=serializers.CharField())
        duplicates = serializers.ListField(child=serializers.CharField())
        documents = serializers.IntegerField(help_text="documents in the files stored now")
        total_documents = serializers.IntegerField(help_text="documents in the project's folder")

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        project = get_object_or_404(Project, pk=project_id)
        policies.access_training(user=request.user, project=project)
        folder = selectors.documents_dir(project)
        names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        return Response({"files": names, "total_documents": selectors.count_documents(folder)})

    @extend_schema(request={"multipart/form-data": Input}, responses={201: Output, **ERRORS})
    def post(self, request: Request, project_id: int) -> Response:
        project = get_object_or_404(Project, pk=project_id)
        policies.access_training(user=request.user, project=project)
        data = self.Input(data={"files": request.FILES.getlist("files")})
        data.is_valid(raise_exception=True)
        try:
            report = documents.documents_upload(
                project=project, files=[(f.name, f.read()) for f in data.validated_data["files"]]
            )
        except documents.DocumentUploadError as exc:
            raise InvalidInput(str(exc), code="documents_invalid") from exc
        total = selectors.count_documents(selectors.documents_dir(project))
        out = self.Output({**report.as_dict(), "total_documents": total})
        return Response(out.data, status=status.HTTP_201_CREATED)
