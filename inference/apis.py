"""REST API for model versions and generation jobs (mounted under /api/v1/)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api_support import CONFLICT, ERRORS
from feedback.errors import Conflict, InvalidInput
from feedback.models import Project
from inference import policies, selectors, services
from inference.engines.base import SamplingParams
from inference.models import GenerationJob, ModelVersion, PairingMode


class ModelVersionOutput(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "base_model",
            "adapter_path",
            "engine",
            "parent",
            "training_run",
            "is_demo",
            "created_at",
        ]


class GenerationJobOutput(serializers.ModelSerializer):
    model_versions = serializers.SerializerMethodField()
    progress = serializers.FloatField()

    class Meta:
        model = GenerationJob
        fields = [
            "id",
            "project",
            "model_versions",
            "prompt_ids",
            "n",
            "sampling_params",
            "pairing",
            "chunk_size",
            "status",
            "cancel_requested",
            "progress",
            "progress_done",
            "progress_total",
            "items_created",
            "error",
            "log_tail",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_model_versions(self, job: GenerationJob) -> list[int]:
        return [v.pk for v in job.model_versions.all()]


def _job_out(job: GenerationJob) -> dict:
    data = GenerationJobOutput(selectors.generation_job_get(job_id=job.pk)).data
    data["stats"] = selectors.generation_job_stats(job=job)
    return data


class ModelVersionListApi(APIView):
    @extend_schema(responses={200: ModelVersionOutput(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.model_version_list(), request, view=self)
        return paginator.get_paginated_response(ModelVersionOutput(page, many=True).data)


class GenerationJobListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        project = serializers.IntegerField(required=False)

    @extend_schema(parameters=[FilterSerializer], responses={200: GenerationJobOutput(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        jobs = selectors.generation_job_list(
            user=request.user, project_id=filters.validated_data.get("project")
        )
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(jobs, request, view=self)
        return paginator.get_paginated_response(GenerationJobOutput(page, many=True).data)


class GenerationJobCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        project = serializers.IntegerField()
        model_versions = serializers.ListField(child=serializers.IntegerField(), min_length=1)
        n = serializers.IntegerField(required=False, min_value=1, max_value=64)
        prompt_ids = serializers.ListField(child=serializers.IntegerField(), required=False, allow_null=True)
        pairing = serializers.ChoiceField(choices=PairingMode.choices, default=PairingMode.SAMPLES)
        chunk_size = serializers.IntegerField(required=False, min_value=1, max_value=4096, default=8)
        max_new_tokens = serializers.IntegerField(required=False, min_value=1, max_value=32768, default=256)
        temperature = serializers.FloatField(required=False, min_value=0, default=0.8)
        top_p = serializers.FloatField(required=False, min_value=0, max_value=1, default=0.95)
        stop = serializers.ListField(child=serializers.CharField(), required=False, default=list)
        seed = serializers.IntegerField(required=False, allow_null=True, default=None)

    @extend_schema(request=InputSerializer, responses={201: GenerationJobOutput, **ERRORS})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        project = get_object_or_404(Project, pk=d["project"])
        policies.access_generation(user=request.user, project=project)
        versions = list(ModelVersion.objects.filter(pk__in=d["model_versions"]))
        missing = set(d["model_versions"]) - {v.pk for v in versions}
        if missing:
            raise serializers.ValidationError({"model_versions": [f"unknown ids: {sorted(missing)}"]})
        try:
            params = SamplingParams(
                max_new_tokens=d["max_new_tokens"],
                temperature=d["temperature"],
                top_p=d["top_p"],
                stop=tuple(d["stop"]),
                seed=d["seed"],
            )
            job = services.generation_job_create(
                project=project,
                model_versions=versions,
                n=d.get("n"),
                prompt_ids=d.get("prompt_ids"),
                sampling_params=params,
                pairing=d["pairing"],
                chunk_size=d["chunk_size"],
                created_by=request.user,
            )
        except (services.GenerationJobError, ValueError) as exc:
            raise InvalidInput(str(exc), code="generation_invalid") from exc
        return Response(_job_out(job), status=status.HTTP_201_CREATED)


class GenerationJobDetailApi(APIView):
    @extend_schema(responses={200: GenerationJobOutput, **ERRORS})
    def get(self, request: Request, job_id: int) -> Response:
        job = get_object_or_404(GenerationJob.objects.select_related("project"), pk=job_id)
        policies.access_generation(user=request.user, project=job.project)
        return Response(_job_out(job))


class GenerationJobCancelApi(APIView):
    @extend_schema(request=None, responses={200: GenerationJobOutput, **ERRORS})
    def post(self, request: Request, job_id: int) -> Response:
        job = get_object_or_404(GenerationJob.objects.select_related("project"), pk=job_id)
        policies.access_generation(user=request.user, project=job.project)
        return Response(_job_out(services.generation_job_cancel(job_id=job.pk)))


class GenerationJobResumeApi(APIView):
    class InputSerializer(serializers.Serializer):
        force = serializers.BooleanField(default=False)

    @extend_schema(request=InputSerializer, responses={200: GenerationJobOutput, **ERRORS, **CONFLICT})
    def post(self, request: Request, job_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = get_object_or_404(GenerationJob.objects.select_related("project"), pk=job_id)
        policies.access_generation(user=request.user, project=job.project)
        try:
            job = services.generation_job_resume(job_id=job.pk, force=data.validated_data["force"])
        except services.GenerationJobError as exc:
            raise Conflict(str(exc), code="generation_not_resumable") from exc
        return Response(_job_out(job))
