"""A small OpenAI-compatible HTTP server over any ``Generator`` (stdlib only).

For users without a GPU (``vllm serve`` needs one) and for tests of the HTTP client::

    python -m inference.engines.server --model PATH|demo --port 8000 [--adapter PATH]

Endpoints, shaped like vLLM's:

- ``POST /v1/chat/completions``: model, messages, n, max_tokens (or max_completion_tokens),
  temperature, top_p, stop, seed. Answers choices with ``finish_reason`` and a usage block;
  each choice also carries its own ``completion_tokens`` (an extension: the usage block only
  sums them). ``stream`` is not supported.
- ``GET /v1/models``, ``GET /health``.
- ``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter`` (``lora_name``, ``lora_path``)
  when the server was given an ``adapter_loader``: the adapter is served as model ``lora_name``.

Requests that arrive together with the same sampling settings are generated as one batch
(a request with a ``seed`` is generated on its own, so that its answer does not depend on
what else was in flight).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from inference.engines.base import Generation, Generator, Messages, SamplingParams

logger = logging.getLogger(__name__)

AdapterLoader = Callable[[str], Generator]
MAX_BODY = 16 * 1024 * 1024
MAX_N = 128


class ClientGone(ConnectionError):
    """The client hung up (timed out, say) before its request was generated: it is dropped."""


def connection_alive(sock: socket.socket) -> bool:
    """False once the peer has closed the connection (a readable socket with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return True
        return sock.recv(1, socket.MSG_PEEK) != b""
    except (OSError, ValueError):
        return False


class RequestError(ValueError):
    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass
class _Pending:
    messages: Messages
    n: int
    params: SamplingParams
    alive: Callable[[], bool] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Generation] | None = None
    error: BaseException | None = None

    @property
    def key(self) -> tuple[int, SamplingParams] | None:
        return None if self.params.seed is not None else (self.n, self.params)


class Batcher:
    """Runs one generator on one thread, merging requests that arrive together into a batch."""

    def __init__(self, generator: Generator, *, max_wait: float = 0.005, max_prompts: int = 64):
        self.generator = generator
        self.max_wait = max_wait
        self.max_prompts = max_prompts
        self._queue: collections.deque[_Pending] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0  # requests dropped because their client had gone
        self._thread = threading.Thread(target=self._loop, name="generator", daemon=True)
        self._thread.start()

    def submit(
        self,
        messages: Messages,
        n: int,
        params: SamplingParams,
        alive: Callable[[], bool] | None = None,
    ) -> list[Generation]:
        pending = _Pending(messages, n, params, alive)
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._queue.append(pending)
            self._cond.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed and not self._queue:
                return None
            first = self._queue.popleft()
            batch = [first]
            if first.key is None:
                return batch
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_prompts:
                matching = [p for p in self._queue if p.key == first.key]
                for p in matching[: self.max_prompts - len(batch)]:
                    self._queue.remove(p)
                    batch.append(p)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or len(batch) >= self.max_prompts:
                    break
                self._cond.wait(remaining)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            # A client that gave up (and may be retrying) gets nothing generated for it:
            # otherwise every retry of a slow request would add its own copy of the work.
            gone = [p for p in batch if p.alive is not None and not p.alive()]
            for pending in gone:
                pending.error = ClientGone()
                pending.done.set()
            self.dropped += len(gone)
            batch = [p for p in batch if p not in gone]
            if not batch:
                continue
            first = batch[0]
            try:
                outputs = self.generator.generate([p.messages for p in batch], n=first.n, params=first.params)
                for pending, output in zip(batch, outputs, strict=True):
                    pending.result = output
            except BaseException as exc:  # every waiting request gets the error
                logger.exception("generation failed for a batch of %d", len(batch))
                for pending in batch:
                    pending.error = exc
            finally:
                for pending in batch:
                    pending.done.set()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)


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


class ModelServer:
    """Route requests to generators by model name; one batcher per generator."""

    def __init__(
        self,
        generator: Generator,
        *,
        model_name: str,
        adapter_loader: AdapterLoader | None = None,
        max_batch_prompts: int = 64,
        max_batch_wait: float = 0.005,
    ) -> None:
        self.default_model = model_name
        self.adapter_loader = adapter_loader
        self._batch_args = {"max_prompts": max_batch_prompts, "max_wait": max_batch_wait}
        self._models: dict[str, Batcher] = {model_name: Batcher(generator, **self._batch_args)}
        self._adapters: dict[str, str] = {}
        self._lock = threading.Lock()
        self.created = int(time.time())
        self.httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        """Requests dropped unanswered because their client had hung up."""
        with self._lock:
            return sum(b.dropped for b in self._models.values())

    # -- operations ------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        with self._lock:
            names = list(self._models)
        data = []
        for name in names:
            parent = self.default_model if name in self._adapters else None
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "arbiter",
                    "root": self._adapters.get(name, name),
                    "parent": parent,
                }
            )
        return {"object": "list", "data": data}

    def chat(self, body: Any, alive: Callable[[], bool] | None = None) -> dict[str, Any]:
        model, messages, n, params = parse_chat_request(body)
        name = model or self.default_model
        with self._lock:
            batcher = self._models.get(name)
        if batcher is None:
            raise RequestError(f"The model `{name}` does not exist.", param="model", status=404)
        generations = batcher.submit(messages, n, params, alive)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": g.text},
                "finish_reason": g.finish_reason,
                "logprobs": None,
                "completion_tokens": g.completion_tokens,
            }
            for i, g in enumerate(generations)
        ]
        prompt_tokens = generations[0].prompt_tokens if generations else 0
        completion_tokens = sum(g.completion_tokens for g in generations)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def load_adapter(self, body: Any) -> str:
        if self.adapter_loader is None:
            raise RequestError("loading LoRA adapters at run time is not enabled on this server")
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise RequestError("lora_name and lora_path are required strings")
        with self._lock:
            if name in self._models:
                raise RequestError(f"The lora adapter '{name}' has already been loaded.")
        try:
            generator = self.adapter_loader(path)
        except Exception as exc:
            raise RequestError(f"cannot load the LoRA adapter from {path!r}: {exc}") from exc
        with self._lock:
            self._models[name] = Batcher(generator, **self._batch_args)
            self._adapters[name] = path
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload_adapter(self, body: Any) -> str:
        name = body.get("lora_name") if isinstance(body, dict) else None
        with self._lock:
            if name not in self._adapters:
                raise RequestError(f"The lora adapter '{name}' cannot be found.", status=404)
            batcher = self._models.pop(name)
            self._adapters.pop(name)
        batcher.close()
        batcher.generator.close()
        return f"Success: LoRA adapter '{name}' removed successfully."

    # -- lifecycle -------------------------------------------------------------------------
    def bind(self, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
        server = self

        class Handler(_Handler):
            model_server = server

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        return self.httpd

    @property
    def url(self) -> str:
        assert self.httpd is not None, "bind() first"
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> ModelServer:
        """Serve on a background thread (port 0: a free port); returns self (see ``url``)."""
        self.bind(host, port)
        assert self.httpd is not None
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        with self._lock:
            batchers = list(self._models.values())
        for batcher in batchers:
            batcher.close()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _Handler(BaseHTTPRequestHandler):
    model_server: ModelServer
    protocol_version = "HTTP/1.1"
    server_version = "arbiter-serve/1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Any) -> None:
        body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status)
        kind = "text/plain" if isinstance(payload, str) else "application/json"
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, param: str | None = None) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._send(
            status,
            {"error": {"message": message, "type": kind, "param": param, "code": status}},
        )

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise RequestError(f"the body is larger than {MAX_BODY} bytes", status=413)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise RequestError(f"the body is not valid JSON: {exc}") from exc

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path == "/health":
            self._send(200, "")
        elif path == "/v1/models":
            self._send(200, self.model_server.models())
        else:
            self._error(404, f"no route GET {path}")

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        connection = self.connection
        routes: dict[str, Callable[[Any], Any]] = {
            "/v1/chat/completions": lambda body: self.model_server.chat(
                body, alive=lambda: connection_alive(connection)
            ),
            "/v1/load_lora_adapter": self.model_server.load_adapter,
            "/v1/unload_lora_adapter": self.model_server.unload_adapter,
        }
        handler = routes.get(path)
        try:
            if handler is None:
                raise RequestError(f"no route POST {path}", status=404)
            self._send(200, handler(self._body()))
        except RequestError as exc:
            self._error(exc.status, str(exc), exc.param)
        except ClientGone:
            self.close_connection = True
        except Exception as exc:
            logger.exception("POST %s failed", path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")


def serve(
    generator: Generator,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str = "default",
    adapter_loader: AdapterLoader | None = None,
) -> None:
    """Serve ``generator`` until interrupted (Ctrl-C)."""
    server = ModelServer(generator, model_name=model_name, adapter_loader=adapter_loader)
    httpd = server.bind(host, port)
    print(f"serving {model_name!r} on {server.url}/v1 (Ctrl-C stops)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        generator.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m inference.engines.server",
        description="Serve a local model over an OpenAI-compatible API (transformers engine).",
    )
    parser.add_argument("--model", required=True, help="HF model folder, or 'demo'")
    parser.add_argument("--adapter", help="LoRA adapter folder to apply")
    parser.add_argument("--name", help="model name clients ask for (default: folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--allow-lora-loading",
        action="store_true",
        help="enable /v1/load_lora_adapter (adapters over this base model)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    from pathlib import Path

    from inference.engines.transformers_engine import TransformersGenerator

    model_path = args.model
    if model_path == "demo":
        from inference.engines.demo_model import DEMO_MODEL_NAME, ensure_demo_model

        model_path = str(ensure_demo_model())
        name = args.name or DEMO_MODEL_NAME
    else:
        name = args.name or Path(model_path).name
    settings = {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size}
    generator = TransformersGenerator(model_path, adapter_path=args.adapter, **settings)
    loader = None
    if args.allow_lora_loading:

        def loader(path: str) -> Generator:
            return TransformersGenerator(model_path, adapter_path=path, **settings)

    serve(generator, args.host, args.port, model_name=name, adapter_loader=loader)


if __name__ == "__main__":
    main()
