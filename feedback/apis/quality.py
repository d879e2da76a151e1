"""Stats and quality endpoints: project progress, agreement, flagging annotators, gold items, and the model
leaderboard (JSON and SVG)."""

from __future__ import annotations

import dataclasses

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback import selectors
from feedback.api_support import ERRORS
from feedback.errors import NotFound
from feedback.models import Item
from feedback.policies import Action, access_project
from feedback.quality.plots import leaderboard_svg
from feedback.quality.selectors import project_leaderboard, project_quality
from feedback.quality.services import annotators_flag, item_gold_set


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
