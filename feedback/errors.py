"""Errors of the feedback domain: a machine-readable code, a human message, and the HTTP status the API maps
them to. Services raise these; `feedback.apis` turns them into ``{"code": ..., "message": ...}`` bodies."""

from __future__ import annotations

from typing import Any


class FeedbackError(Exception):
    code: str = "error"
    http_status: int = 400

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(FeedbackError):
    """The request is malformed: a payload that does not fit the task, a bad field."""

    code = "invalid"
    http_status = 400


class NotFound(FeedbackError):
    code = "not_found"
    http_status = 404


class Forbidden(FeedbackError):
    code = "forbidden"
    http_status = 403


class Conflict(FeedbackError):
    """The request is well-formed but the state does not allow it (409)."""

    code = "conflict"
    http_status = 409


class NoLiveLease(Conflict):
    code = "no_live_lease"


class AlreadyAnnotated(Conflict):
    code = "already_annotated"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class UndoWindowPassed(Conflict):
    code = "undo_window_passed"
