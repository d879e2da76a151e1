"""REST API of the annotation domain (DRF), under /api/v1/.

One APIView per operation with nested Input/Output serializers; each view fetches, authorises
(`feedback.policies`), calls one service or selector, and serialises. Errors are ``{"code", "message"}``
(feedback.api_support.exception_handler).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback import selectors
from feedback.api_support import CONFLICT, ERRORS, LoginThrottle, Pagination
from feedback.authentication import token_forget
from feedback.errors import InvalidInput, NotFound
from feedback.models import (
    Annotation,
    AssignmentOrder,
    Item,
    Lease,
    PiiPolicy,
    Role,
    TaskKind,
)
from feedback.policies import Action, access_annotation, access_project, access_project_create
from feedback.quality.plots import leaderboard_svg
from feedback.quality.selectors import project_leaderboard, project_quality
from feedback.quality.services import annotators_flag, item_gold_set
from feedback.services.distribution import (
    annotation_submit,
    annotation_undo,
    item_next,
    item_skip,
    lease_candidates,
)
from feedback.services.imports import candidates_import_file, prompts_import_file
from feedback.services.payloads import FLAGS
from feedback.services.project_admin import project_update
from feedback.services.projects import membership_set, project_create


def _django_invalid(exc: DjangoValidationError) -> InvalidInput:
    details = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    message = "; ".join(f"{k}: {' '.join(v)}" for k, v in details.items())
    return InvalidInput(message, details=details)


# ---- auth ---------------------------------------------------------------------------------------------------


class TokenObtainApi(APIView):
    """Exchange a username and password for an API token (send it as ``Authorization: Token <key>``)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginThrottle]

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        user_id = serializers.IntegerField()
        username = serializers.CharField()

    @extend_schema(request=AuthTokenSerializer, responses={200: OutputSerializer, 400: ERRORS[400]}, auth=[])
    def post(self, request: Request) -> Response:
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        data = {"token": token.key, "user_id": user.pk, "username": user.get_username()}
        return Response(self.OutputSerializer(data).data)


class TokenRevokeApi(APIView):
    """Delete the caller's token (a new one is issued at the next obtain)."""

    @extend_schema(request=None, responses={204: None, **ERRORS})
    def post(self, request: Request) -> Response:
        for token in Token.objects.filter(user=request.user):
            token_forget(token.key)
            token.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    """Who the credentials belong to."""

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.IntegerField(source="pk")
        username = serializers.CharField(source="get_username")
        is_staff = serializers.BooleanField()

    @extend_schema(responses={200: OutputSerializer, **ERRORS})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)


# ---- projects -----------------------------------------------------------------------------------------------


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


# ---- imports ------------------------------------------------------------------------------------------------


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


# ---- annotating ---------------------------------------------------------------------------------------------


class LeaseOutputSerializer(serializers.Serializer):
    """An item leased to you: the prompt and the responses in the order to show them (A, B, ... or 1, 2, ...)."""

    class PromptSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        text = serializers.CharField()
        messages = serializers.JSONField()

    class CandidateSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        text = serializers.CharField()
        truncated = serializers.BooleanField()

    lease_id = serializers.IntegerField(source="pk")
    item_id = serializers.IntegerField()
    project_id = serializers.IntegerField(source="item.project_id")
    kind = serializers.CharField(source="item.project.task_kind")
    allow_ties = serializers.BooleanField(source="item.project.allow_ties")
    expires_at = serializers.DateTimeField()
    prompt = PromptSerializer(source="item.prompt")
    candidates = CandidateSerializer(source="candidates_shown", many=True)


def lease_as_dict(lease: Lease) -> dict[str, Any]:
    """LeaseOutputSerializer's output, built by hand: this runs on every next (a DRF serializer deep-copies
    its fields per instance, ~0.35 ms). tests/feedback/test_api.py checks both give the same."""
    item, project = lease.item, lease.item.project
    return {
        "lease_id": lease.pk,
        "item_id": lease.item_id,
        "project_id": item.project_id,
        "kind": project.task_kind,
        "allow_ties": project.allow_ties,
        "expires_at": _DATETIME.to_representation(lease.expires_at),
        "prompt": {"id": item.prompt.pk, "text": item.prompt.text, "messages": item.prompt.messages},
        "candidates": [
            {"id": c.pk, "text": c.text, "truncated": c.finish_reason == "length"}
            for c in lease_candidates(lease=lease)
        ],
    }


def annotation_as_dict(annotation: Annotation) -> dict[str, Any]:
    """AnnotationSubmitApi.OutputSerializer's output, built by hand (every submit)."""
    return {
        "id": annotation.pk,
        "item_id": annotation.item_id,
        "annotator_id": annotation.annotator_id,
        "kind": annotation.kind,
        "payload": annotation.payload,
        "order_shown": annotation.order_shown,
        "time_spent_ms": annotation.time_spent_ms,
        "comment": annotation.comment,
        "flags": annotation.flags,
        "idempotency_key": annotation.idempotency_key,
        "created_at": _DATETIME.to_representation(annotation.created_at),
    }


_DATETIME = serializers.DateTimeField()


class ItemNextApi(APIView):
    """Lease the next item to judge (any member). 204 when nothing is left for you.
    Calling again before submitting returns the same lease."""

    @extend_schema(request=None, responses={200: LeaseOutputSerializer, 204: None, **ERRORS})
    def post(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.ANNOTATE)
        lease = item_next(project=m.project, user=request.user)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(lease_as_dict(lease))


class AnnotationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    item_id = serializers.IntegerField()
    project_id = serializers.IntegerField(source="item.project_id")
    annotator_id = serializers.IntegerField()
    kind = serializers.CharField()
    payload = serializers.JSONField()
    order_shown = serializers.JSONField()
    time_spent_ms = serializers.IntegerField()
    comment = serializers.CharField()
    flags = serializers.JSONField()
    idempotency_key = serializers.CharField()
    created_at = serializers.DateTimeField()


class SubmitInputSerializer(serializers.Serializer):
    payload = serializers.JSONField(
        help_text='ranking: {"ranking": [best, [tied, ids], worst]}; pairwise: {"choice": "A"|"B"|"tie"|'
        '"both_bad", "strength": "slight"|"clear"}; binary: {"labels": {"<id>": "up"|"down"}, '
        '"reasons": {"<id>": ["tag"]}}'
    )
    idempotency_key = serializers.CharField(
        max_length=64,
        required=False,
        help_text="Or the Idempotency-Key header. A retry returns the first result.",
    )
    time_spent_ms = serializers.IntegerField(min_value=0, default=0)
    comment = serializers.CharField(allow_blank=True, default="", max_length=10_000)
    flags = serializers.ListField(child=serializers.ChoiceField(choices=FLAGS), default=list)
    demonstration = serializers.CharField(
        allow_blank=True, default="", max_length=100_000, help_text="A better answer, written by you."
    )


class AnnotationSubmitApi(APIView):
    """Submit your judgement of an item you hold a live lease on. 201 when stored; 200 with the first result
    when the idempotency key was seen before; 409 when you hold no live lease."""

    InputSerializer = SubmitInputSerializer

    class OutputSerializer(AnnotationOutputSerializer):
        project_id = None  # the item is not loaded on this path (one statement fewer)

    @extend_schema(
        request=InputSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER)],
        responses={201: OutputSerializer, 200: OutputSerializer, **ERRORS, **CONFLICT},
    )
    def post(self, request: Request, item_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = data.get("idempotency_key") or request.headers.get("Idempotency-Key", "")
        if not key:
            raise InvalidInput(
                "give an idempotency_key (or an Idempotency-Key header)", details={"field": "idempotency_key"}
            )
        # Authorisation: the live lease is the permission (only members of the project are given leases).
        annotation, created = annotation_submit(
            user=request.user,
            item_id=item_id,
            payload=data["payload"],
            idempotency_key=key,
            time_spent_ms=data["time_spent_ms"],
            comment=data["comment"],
            flags=data["flags"],
            demonstration=data["demonstration"],
        )
        out = annotation_as_dict(annotation)
        return Response(out, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ItemSkipApi(APIView):
    """Give back an item you hold, with a reason; you will not be offered it again."""

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=500)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        item_id = serializers.IntegerField()
        reason = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer, **ERRORS, **CONFLICT})
    def post(self, request: Request, item_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        skip = item_skip(user=request.user, item_id=item_id, reason=serializer.validated_data["reason"])
        return Response(self.OutputSerializer(skip).data)


class AnnotationUndoApi(APIView):
    """Withdraw your annotation within the project's undo window; the item comes back to you (next returns it)."""

    class OutputSerializer(serializers.Serializer):
        lease_id = serializers.IntegerField(source="pk")
        item_id = serializers.IntegerField()
        expires_at = serializers.DateTimeField()

    @extend_schema(request=None, responses={200: OutputSerializer, **ERRORS, **CONFLICT})
    def post(self, request: Request, annotation_id: int) -> Response:
        lease: Lease = annotation_undo(user=request.user, annotation_id=annotation_id)
        return Response(self.OutputSerializer(lease).data)


class AnnotationListApi(APIView):
    """Your own annotations, newest first (optionally in one project)."""

    class FilterSerializer(serializers.Serializer):
        project = serializers.IntegerField(required=False)

    @extend_schema(
        parameters=[OpenApiParameter("project", int)],
        responses={200: AnnotationOutputSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = selectors.annotations_of_user(
            user=request.user, project_id=filters.validated_data.get("project")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(AnnotationOutputSerializer(page, many=True).data)


class AnnotationDetailApi(APIView):
    """One annotation: your own, or anyone's in a project you review. Others' look absent (404)."""

    @extend_schema(responses={200: AnnotationOutputSerializer, **ERRORS})
    def get(self, request: Request, annotation_id: int) -> Response:
        annotation = access_annotation(user=request.user, annotation_id=annotation_id)
        return Response(AnnotationOutputSerializer(annotation).data)


class ProjectAnnotationListApi(APIView):
    """Everyone's annotations in a project (reviewer, admin)."""

    class FilterSerializer(serializers.Serializer):
        annotator = serializers.IntegerField(required=False)

    @extend_schema(
        parameters=[OpenApiParameter("annotator", int)],
        responses={200: AnnotationOutputSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.REVIEW)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = selectors.annotations_of_project(
            project=m.project, annotator_id=filters.validated_data.get("annotator")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(AnnotationOutputSerializer(page, many=True).data)


# ---- stats and quality --------------------------------------------------------------------------------------


class ProjectStatsApi(APIView):
    """Progress of a project: items done and needed, live leases, and per-annotator counts (reviewer, admin)."""

    class OutputSerializer(serializers.Serializer):
        class AnnotatorSerializer(serializers.Serializer):
            user_id = serializers.IntegerField()
            username = serializers.CharField()
            role = serializers.CharField()
            flagged = serializers.BooleanField()
            annotations = serializers.IntegerField()
            skips = serializers.IntegerField()
            live_leases = serializers.IntegerField()
            median_time_ms = serializers.IntegerField(allow_null=True)

        project_id = serializers.IntegerField(source="project.pk")
        items = serializers.IntegerField()
        items_open = serializers.IntegerField()
        items_done = serializers.IntegerField()
        gold_items = serializers.IntegerField()
        annotations_needed = serializers.IntegerField()
        annotations_done = serializers.IntegerField()
        live_leases = serializers.IntegerField()
        skips = serializers.IntegerField()
        annotators = AnnotatorSerializer(many=True)

    @extend_schema(responses={200: OutputSerializer, **ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.REVIEW)
        return Response(self.OutputSerializer(selectors.project_stats(project=m.project)).data)


class ProjectAgreementApi(APIView):
    """Krippendorff's alpha (ordinal for rankings, nominal for pairwise and binary) for the project and each
    annotator, gold accuracy, flags and position bias (reviewer, admin)."""

    class OutputSerializer(serializers.Serializer):
        class AnnotatorSerializer(serializers.Serializer):
            user_id = serializers.IntegerField()
            username = serializers.CharField()
            annotations = serializers.IntegerField()
            alpha = serializers.FloatField(allow_null=True)
            shared_units = serializers.IntegerField()
            gold_answered = serializers.IntegerField()
            gold_accuracy = serializers.FloatField(allow_null=True)
            flagged = serializers.BooleanField()
            first_position_wins = serializers.IntegerField()
            decisive = serializers.IntegerField()

        project_id = serializers.IntegerField()
        kind = serializers.CharField()
        level = serializers.CharField()
        alpha = serializers.FloatField(allow_null=True)
        units = serializers.IntegerField()
        annotations = serializers.IntegerField()
        min_agreement = serializers.FloatField()
        annotators = AnnotatorSerializer(many=True)
        position_bias = serializers.JSONField()

    @extend_schema(responses={200: OutputSerializer, **ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.REVIEW)
        data = {
            **dataclasses.asdict(project_quality(project=m.project)),
            "min_agreement": m.project.min_agreement,
        }
        return Response(self.OutputSerializer(data).data)


class ProjectQualityFlagApi(APIView):
    """Flag annotators below the project's min_agreement (gold accuracy or alpha); unflag recovered ones
    (admin). Flagged annotators are left out of exports and the leaderboard by default."""

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.IntegerField()
        username = serializers.CharField()
        flagged = serializers.BooleanField()
        reason = serializers.CharField()

    @extend_schema(request=None, responses={200: OutputSerializer(many=True), **ERRORS})
    def post(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.MANAGE)
        changes = annotators_flag(project=m.project)
        return Response(self.OutputSerializer(changes, many=True).data)


class ItemGoldSetApi(APIView):
    """Make an item gold with its known answer, or ordinary again with null (admin). Pairwise gold is
    {"chosen": <candidate id>} or {"choice": "tie"|"both_bad"}; ranking and binary gold use the submit shapes."""

    class InputSerializer(serializers.Serializer):
        gold_payload = serializers.JSONField(allow_null=True)
        annotations_required = serializers.IntegerField(required=False, min_value=1, max_value=32767)

    class OutputSerializer(serializers.Serializer):
        item_id = serializers.IntegerField(source="pk")
        is_gold = serializers.BooleanField()
        gold_payload = serializers.JSONField()
        annotations_required = serializers.IntegerField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer, **ERRORS})
    def post(self, request: Request, item_id: int) -> Response:
        project_id = Item.objects.filter(pk=item_id).values_list("project_id", flat=True).first()
        if project_id is None:
            raise NotFound(f"no item {item_id}", code="item_not_found")
        m = access_project(user=request.user, project_id=project_id, action=Action.MANAGE)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = Item.objects.select_related("project").get(pk=item_id)
        item.project = m.project
        item = item_gold_set(
            item=item,
            gold_payload=serializer.validated_data["gold_payload"],
            annotations_required=serializer.validated_data.get("annotations_required"),
        )
        return Response(self.OutputSerializer(item).data)


class _LeaderboardFilter(serializers.Serializer):
    bootstrap = serializers.IntegerField(required=False, min_value=0, max_value=2000, default=200)
    include_flagged = serializers.BooleanField(required=False, default=False)


class ProjectLeaderboardApi(APIView):
    """Model versions ranked by Bradley-Terry (maximum likelihood, on the Elo scale) with bootstrap 95%
    intervals over annotations, and Elo, from every judgement that compares two versions (reviewer, admin)."""

    class OutputSerializer(serializers.Serializer):
        model_version = serializers.CharField(source="player")
        rating = serializers.FloatField()
        ci_low = serializers.FloatField(allow_null=True)
        ci_high = serializers.FloatField(allow_null=True)
        elo = serializers.FloatField()
        wins = serializers.FloatField()
        losses = serializers.FloatField()
        comparisons = serializers.IntegerField()
        win_rate = serializers.FloatField(allow_null=True)

    @extend_schema(
        parameters=[OpenApiParameter("bootstrap", int), OpenApiParameter("include_flagged", bool)],
        responses={200: OutputSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, project_id: int) -> Response:
        m = access_project(user=request.user, project_id=project_id, action=Action.REVIEW)
        filters = _LeaderboardFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        standings = project_leaderboard(project=m.project, **filters.validated_data)
        return Response(self.OutputSerializer(standings, many=True).data)


class ProjectLeaderboardPlotApi(APIView):
    """The leaderboard as an SVG plot (reviewer, admin)."""

    @extend_schema(
        parameters=[OpenApiParameter("bootstrap", int), OpenApiParameter("include_flagged", bool)],
        responses={(200, "image/svg+xml"): OpenApiTypes.STR, **ERRORS},
    )
    def get(self, request: Request, project_id: int) -> HttpResponse:
        m = access_project(user=request.user, project_id=project_id, action=Action.REVIEW)
        filters = _LeaderboardFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        standings = project_leaderboard(project=m.project, **filters.validated_data)
        svg = leaderboard_svg(standings, title=f"{m.project.name}: model versions")
        response = HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        response["X-Content-Type-Options"] = "nosniff"
        return response


# ---- the framework's ceiling (load benchmark only) ----------------------------------------------------------

_CEILING_TEXT = "A response of about the usual length, with a few sentences of text in it. " * 4


@extend_schema(exclude=True)
class CeilingNextApi(APIView):
    """Same server and framework as ItemNextApi, no database (enabled by ARBITER_BENCH_ENDPOINTS=1)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def post(self, request: Request) -> Response:
        body = {
            "lease_id": 1,
            "item_id": 1,
            "project_id": 1,
            "kind": "pairwise",
            "allow_ties": True,
            "expires_at": "2026-01-01T00:00:00Z",
            "prompt": {"id": 1, "text": "A prompt?", "messages": [{"role": "user", "content": "A prompt?"}]},
            "candidates": [
                {"id": 1, "text": _CEILING_TEXT, "truncated": False},
                {"id": 2, "text": _CEILING_TEXT, "truncated": False},
            ],
        }
        return Response(body)


@extend_schema(exclude=True)
class CeilingSubmitApi(APIView):
    """Same input validation as AnnotationSubmitApi, no database."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def post(self, request: Request, item_id: int) -> Response:
        serializer = SubmitInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return Response(
            {
                "id": 1,
                "item_id": item_id,
                "annotator_id": 1,
                "kind": "pairwise",
                "payload": data["payload"],
                "order_shown": [1, 2],
                "time_spent_ms": data["time_spent_ms"],
                "comment": data["comment"],
                "flags": data["flags"],
                "idempotency_key": data.get("idempotency_key", ""),
                "created_at": "2026-01-01T00:00:00Z",
            },
            status=status.HTTP_201_CREATED,
        )
