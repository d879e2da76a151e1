"""Project endpoints: list, create, show and update projects, and set members' roles. Also holds
``_django_invalid`` (a Django ValidationError from a service as the API's InvalidInput)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback import selectors
from feedback.api_support import ERRORS, Pagination
from feedback.errors import InvalidInput, NotFound
from feedback.models import AssignmentOrder, PiiPolicy, Role, TaskKind
from feedback.policies import Action, access_project, access_project_create
from feedback.services.project_admin import project_update
from feedback.services.projects import membership_set, project_create


def _django_invalid(exc: DjangoValidationError) -> InvalidInput:
    details = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    message = "; ".join(f"{k}: {' '.join(v)}" for k, v in details.items())
    return InvalidInput(message, details=details)


class ProjectOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    guidelines = serializers.CharField()
    task_kind = serializers.CharField()
    responses_per_item = serializers.IntegerField()
    annotations_required = serializers.IntegerField()
    lease_ttl_seconds = serializers.IntegerField()
    assignment_order = serializers.CharField()
    allow_ties = serializers.BooleanField()
    gold_rate = serializers.FloatField()
    undo_window_seconds = serializers.IntegerField()
    min_agreement = serializers.FloatField()
    pii_policy = serializers.CharField()
    created_at = serializers.DateTimeField()


class ProjectListApi(APIView):
    """The projects you belong to, with your role and progress."""

    class OutputSerializer(serializers.Serializer):
        project = ProjectOutputSerializer()
        role = serializers.CharField()
        items = serializers.IntegerField()
        annotations_needed = serializers.IntegerField()
        annotations_done = serializers.IntegerField()
        mine_total = serializers.IntegerField()
        mine_today = serializers.IntegerField()

    @extend_schema(responses={200: OutputSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        rows = selectors.project_progress_for_user(user=request.user)
        paginator = Pagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class ProjectSettingsInputSerializer(serializers.Serializer):
    guidelines = serializers.CharField(required=False, allow_blank=True)
    annotations_required = serializers.IntegerField(required=False, min_value=1, max_value=1000)
    lease_ttl_seconds = serializers.IntegerField(required=False, min_value=10, max_value=7 * 24 * 3600)
    assignment_order = serializers.ChoiceField(choices=AssignmentOrder.choices, required=False)
    allow_ties = serializers.BooleanField(required=False)
    gold_rate = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    undo_window_seconds = serializers.IntegerField(required=False, min_value=0, max_value=24 * 3600)
    min_agreement = serializers.FloatField(required=False, min_value=-1.0, max_value=1.0)
    pii_policy = serializers.ChoiceField(choices=PiiPolicy.choices, required=False)


class ProjectCreateApi(APIView):
    """Create a project (staff only); you become its admin."""

    class InputSerializer(ProjectSettingsInputSerializer):
        name = serializers.CharField(max_length=200)
        task_kind = serializers.ChoiceField(choices=TaskKind.choices)
        responses_per_item = serializers.IntegerField(required=False, min_value=1, max_value=16)

    @extend_schema(request=InputSerializer, responses={201: ProjectOutputSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        access_project_create(user=request.user)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                project = project_create(**serializer.validated_data)
                membership_set(project=project, user=request.user, role=Role.ADMIN)
        except DjangoValidationError as exc:
            raise _django_invalid(exc) from None
        return Response(ProjectOutputSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    """A project's settings and guidelines (any member)."""

    class OutputSerializer(serializers.Serializer):
        project = ProjectOutputSerializer()
        role = serializers.CharField()

    @extend_schema(responses={200: OutputSerializer, **ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(self.OutputSerializer({"project": m.project, "role": m.role}).data)


class ProjectUpdateApi(APIView):
    """Change a project's settings (admin). The task kind and responses per item are fixed once created."""

    @extend_schema(request=ProjectSettingsInputSerializer, responses={200: ProjectOutputSerializer, **ERRORS})
    def post(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.MANAGE)
        serializer = ProjectSettingsInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            project = project_update(project=m.project, **serializer.validated_data)
        except DjangoValidationError as exc:
            raise _django_invalid(exc) from None
        return Response(ProjectOutputSerializer(project).data)


class MembershipSetApi(APIView):
    """Add a user to the project or change their role (admin)."""

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.ChoiceField(choices=Role.choices)

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.IntegerField()
        username = serializers.CharField(source="user.username")
        role = serializers.CharField()
        flagged = serializers.BooleanField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer, **ERRORS})
    def post(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.MANAGE)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = get_user_model().objects.filter(username=serializer.validated_data["username"]).first()
        if user is None:
            raise NotFound(f"no user {serializer.validated_data['username']!r}", code="user_not_found")
        membership = membership_set(project=m.project, user=user, role=serializer.validated_data["role"])
        return Response(self.OutputSerializer(membership).data)
