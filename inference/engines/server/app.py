"""The HTTP server: ``ModelServer`` routes requests to a batcher per model (adapters loaded at run
time included), ``_Handler`` speaks HTTP, ``serve`` runs it until Ctrl-C."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from inference.engines.base import Generator
from inference.engines.server.batching import Batcher, ClientGone, connection_alive
from inference.engines.server.protocol import RequestError, parse_chat_request

logger = logging.getLogger(__name__)

AdapterLoader = Callable[[str], Generator]
MAX_BODY = 16 * 1024 * 1024


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
