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

Where the code lives: ``batching`` (``Batcher``, dropping requests whose client hung up),
``protocol`` (``parse_chat_request``, ``RequestError``), ``app`` (``ModelServer``, the HTTP
handler, ``serve``), ``cli`` (``main``; ``__main__`` runs it).
"""

from __future__ import annotations

from inference.engines.server.app import MAX_BODY, AdapterLoader, ModelServer, serve
from inference.engines.server.batching import Batcher, ClientGone, connection_alive
from inference.engines.server.cli import main
from inference.engines.server.protocol import MAX_N, RequestError, parse_chat_request

__all__ = [
    "MAX_BODY",
    "MAX_N",
    "AdapterLoader",
    "Batcher",
    "ClientGone",
    "ModelServer",
    "RequestError",
    "connection_alive",
    "main",
    "parse_chat_request",
    "serve",
]
