"""What every API view shares: the error format, pagination and throttles.

Every 4xx answer has the body ``{"code": "<machine-readable>", "message": "<for a person>"}`` (plus
``details`` where there is more to say, e.g. the fields a validation error names).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

from feedback.errors import FeedbackError
from feedback.importing import ImportFileError

DRF_CODES: dict[type[Exception], str] = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "parse_error",
    exceptions.ValidationError: "invalid",
}


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            name = str(key) if key != api_settings.NON_FIELD_ERRORS_KEY else ""
            out += _flatten(value, f"{prefix}.{name}" if prefix and name else (name or prefix))
        return out
    if isinstance(detail, list):
        return [m for item in detail for m in _flatten(item, prefix)]
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, FeedbackError):
        return Response(exc.as_dict(), status=exc.http_status)
    if isinstance(exc, ImportFileError):
        details = {k: v for k, v in {"location": exc.location, "field": exc.field}.items() if v}
        body = {"code": "import_invalid", "message": f"nothing was imported: {exc}"}
        return Response({**body, "details": details} if details else body, status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    from rest_framework.views import exception_handler as drf_exception_handler  # not at import: a cycle

    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code = next((c for cls, c in DRF_CODES.items() if isinstance(exc, cls)), exc.default_code)
    if isinstance(exc, exceptions.ValidationError):
        body: dict[str, Any] = {
            "code": code,
            "message": "; ".join(_flatten(exc.detail)) or "invalid input",
            "details": exc.detail,
        }
    else:
        body = {"code": code, "message": str(exc.detail)}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            body["details"] = {"retry_after_s": round(exc.wait, 1)}
    response.data = body
    return response


class ErrorSerializer(serializers.Serializer):
    """The body of every 4xx answer (for the schema)."""

    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(required=False)


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input"),
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated"),
    403: OpenApiResponse(ErrorSerializer, description="Your role does not allow this"),
    404: OpenApiResponse(ErrorSerializer, description="Not found (or not yours to see)"),
}
"""The 4xx answers every endpoint may give, for ``extend_schema(responses=...)``."""
CONFLICT = {409: OpenApiResponse(ErrorSerializer, description="The state does not allow it")}


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ProcessThrottleStore:
    """Where the throttles keep each client's request times: this process's memory, as Django's default
    (local-memory) cache did, but without pickling the whole history on every request (that cost ~0.15 ms a
    request on the annotate hot path). Each process counts on its own, as before: with N server processes a
    client may reach up to N times the rate."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._data: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: list[float], timeout: float | None = None) -> None:
        with self._lock:
            if len(self._data) >= self.MAX_KEYS and key not in self._data:
                self._data.clear()
            self._data[key] = value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


throttle_store = ProcessThrottleStore()


@functools.lru_cache(maxsize=64)
def _parse_rate(rate: str | None) -> tuple[int | None, int | None]:
    return SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]  # it does not use self


class _LiveRate:
    """Read the rate from the settings at call time (so a test or deployment can change it); keep the
    history in throttle_store. DRF builds each throttle on every request: the parsed rate is remembered."""

    scope: str
    cache = throttle_store

    def __init__(self) -> None:
        self.rate = self.get_rate()
        self.num_requests, self.duration = _parse_rate(self.rate)

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserThrottle(_LiveRate, UserRateThrottle):
    pass


class AnonThrottle(_LiveRate, AnonRateThrottle):
    pass


class LoginThrottle(_LiveRate, AnonRateThrottle):
    scope = "login"
