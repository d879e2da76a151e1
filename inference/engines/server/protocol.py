"""Validating an OpenAI chat completion request into (model, messages, n, sampling params)."""

from __future__ import annotations

from typing import Any

from inference.engines.base import Messages, SamplingParams

MAX_N = 128


class RequestError(ValueError):
    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def _messages(value: Any) -> Messages:
    if not isinstance(value, list) or not value:
        raise RequestError("messages must be a non-empty list", param="messages")
    out: Messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a role", param="messages")
        content = message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise RequestError(
                        f"messages[{i}].content: only text parts are supported", param="messages"
                    )
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string", param="messages")
        out.append({"role": message["role"], "content": content})
    return out


def _number(body: dict[str, Any], name: str, default: Any, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name} must be a number", param=name)
    if kind is int and value != int(value):
        raise RequestError(f"{name} must be an integer", param=name)
    return kind(value)


def parse_chat_request(body: Any) -> tuple[str | None, Messages, int, SamplingParams]:
    """Validate a chat completion request: (model, messages, n, params)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if body.get("stream"):
        raise RequestError("stream=true is not supported by this server", param="stream")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("model must be a string", param="model")
    messages = _messages(body.get("messages"))
    n = _number(body, "n", 1, int)
    if not 1 <= n <= MAX_N:
        raise RequestError(f"n must be between 1 and {MAX_N}", param="n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", 256, int)
    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stop = tuple(s for s in stop if s)
    else:
        raise RequestError("stop must be a string or a list of strings", param="stop")
    seed = _number(body, "seed", None, int)
    try:
        params = SamplingParams(
            max_new_tokens=max_tokens,
            temperature=_number(body, "temperature", 1.0, float),
            top_p=_number(body, "top_p", 1.0, float),
            stop=stop,
            seed=seed,
        )
    except ValueError as exc:
        raise RequestError(str(exc)) from exc
    return model, messages, n, params
