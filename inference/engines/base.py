"""The one contract every generation backend meets (Django-free)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, str]
Messages = list[Message]
FinishReason = Literal["stop", "length"]
ProgressCallback = Callable[[int], None]
"""Called with the number of prompts finished since the last call."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample. The same fields for every engine; stored on each candidate."""

    max_new_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        data = dict(data)
        if "stop" in data:
            data["stop"] = tuple(data["stop"] or ())
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Generation:
    """One sampled response."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@runtime_checkable
class Generator(Protocol):
    """generate(chat prompts, n, sampling parameters) -> n generations per prompt, in prompt order."""

    name: str

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        n: int,
        params: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> list[list[Generation]]: ...

    def close(self) -> None: ...
