"""Errors shared by the engines (Django-free)."""

from __future__ import annotations


class EngineError(RuntimeError):
    """A generation backend could not do what it was asked (bad model folder, prompt too long…)."""


class EngineUnavailable(EngineError):
    """The backend cannot run here (vLLM not installed, no CUDA device…)."""


class RemoteError(EngineError):
    """An OpenAI-compatible server answered with an error, or did not answer after retries."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
