"""The framework's ceiling (load benchmark only): next and submit with the same server and framework but no
database, enabled by ARBITER_BENCH_ENDPOINTS=1."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.apis.annotating import SubmitInputSerializer

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
