"""Annotating endpoints: lease the next item, submit, skip, undo, and list or show annotations. next and submit
build their bodies by hand (``lease_as_dict``, ``annotation_as_dict``): they are the hot path."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback import selectors
from feedback.api_support import CONFLICT, ERRORS, Pagination
from feedback.errors import InvalidInput
from feedback.models import Annotation, Lease
from feedback.policies import Action, access_annotation, access_project
from feedback.services.distribution import (
    annotation_submit,
    annotation_undo,
    item_next,
    item_skip,
    lease_candidates,
)
from feedback.services.payloads import FLAGS


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
