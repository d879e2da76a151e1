"""A client for any OpenAI-compatible chat server — ``vllm serve`` first of all, or ours
(``inference.engines.server``).

One ``/v1/chat/completions`` request per prompt with ``n=``, sent concurrently (at most
``concurrency`` in flight) over one async httpx client. Connection errors, timeouts and the
answers 408/409/429/5xx are retried with exponential backoff and jitter (``Retry-After`` is
honoured); other errors fail at once with the server's message.

Token counts per response: vLLM returns each choice's ``token_ids`` when asked
(``return_token_ids``), our server returns each choice's ``completion_tokens``; with ``n=1``
the usage block is exact anyway. For a server that gives neither, ``token_counts="usage"``
sends ``n`` requests with ``n=1`` each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from inference.engines.base import Generation, Messages, ProgressCallback, SamplingParams
from inference.engines.errors import RemoteError

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
TokenCounts = Literal["token_ids", "usage"]


def normalise_base_url(base_url: str) -> str:
    """``http://h:8000``, ``http://h:8000/`` and ``http://h:8000/v1`` all mean the same server."""
    url = base_url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    return url


class OpenAIGenerator:
    """Generate through an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        token_counts: TokenCounts = "token_ids",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if token_counts not in ("token_ids", "usage"):
            raise ValueError(f"token_counts must be 'token_ids' or 'usage', got {token_counts!r}")
        self.base_url = normalise_base_url(base_url)
        self.model = model
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.token_counts = token_counts
        self.extra_body = dict(extra_body or {})
        self.requests_sent = 0  # attempts, retries included (for tests and benchmarks)

    # -- plumbing --------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("Retry-After")
            if retry_after:
                try:
                    return min(self.max_backoff, max(0.0, float(retry_after)))
                except ValueError:
                    pass
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)

    async def _post(self, client: httpx.AsyncClient, path: str, payload: dict[str, Any]) -> Any:
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            response: httpx.Response | None = None
            self.requests_sent += 1
            try:
                response = await client.post(url, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise RemoteError(f"POST {url}: the answer is not JSON: {exc}") from exc
                last = f"HTTP {response.status_code}: {response.text[:500]}"
                if response.status_code not in RETRY_STATUS:
                    raise RemoteError(f"POST {url}: {last}", status=response.status_code)
            if attempt == self.max_retries:
                break
            delay = self._delay(attempt, response)
            logger.warning(
                "POST %s failed (%s); retry %d/%d in %.2fs",
                url,
                last,
                attempt + 1,
                self.max_retries,
                delay,
            )
            await asyncio.sleep(delay)
        raise RemoteError(
            f"POST {url} failed after {self.max_retries + 1} attempts; last: {last}",
            status=response.status_code if response is not None else None,
        )

    def _payload(self, messages: Messages, n: int, params: SamplingParams) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "n": n,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        if self.token_counts == "token_ids":
            payload["return_token_ids"] = True
        payload.update(self.extra_body)
        return payload

    @staticmethod
    def _parse(url: str, data: Any, n: int) -> list[Generation]:
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens", 0))
        except (KeyError, TypeError, AttributeError) as exc:
            raise RemoteError(f"{url}: malformed answer ({exc!r}): {str(data)[:300]}") from exc
        if len(choices) != n:
            raise RemoteError(f"{url}: asked for n={n} choices, got {len(choices)}")
        generations = []
        for choice in choices:
            reason = choice.get("finish_reason")
            if reason in (None, "abort", "error"):
                raise RemoteError(f"{url}: choice {choice.get('index')} ended with {reason!r}")
            finish = "length" if reason == "length" else "stop"
            if choice.get("token_ids") is not None:
                completion_tokens = len(choice["token_ids"])
            elif choice.get("completion_tokens") is not None:
                completion_tokens = int(choice["completion_tokens"])
            elif n == 1:
                completion_tokens = int(usage.get("completion_tokens", 0))
            else:
                raise RemoteError(
                    f"{url}: the server gives no per-choice token counts for n={n}; use token_counts='usage'"
                )
            content = (choice.get("message") or {}).get("content") or ""
            generations.append(Generation(content, finish, prompt_tokens, completion_tokens))
        return generations

    async def _one(
        self,
        client: httpx.AsyncClient,
        gate: asyncio.Semaphore,
        messages: Messages,
        n: int,
        params: SamplingParams,
    ) -> list[Generation]:
        path = "/v1/chat/completions"
        url = f"{self.base_url}{path}"
        if self.token_counts == "usage" and n > 1:
            out: list[Generation] = []
            for i in range(n):
                single = params
                if params.seed is not None:
                    single = SamplingParams.from_dict({**params.to_dict(), "seed": params.seed + i})
                async with gate:
                    data = await self._post(client, path, self._payload(messages, 1, single))
                out.extend(self._parse(url, data, 1))
            return out
        async with gate:
            data = await self._post(client, path, self._payload(messages, n, params))
        return self._parse(url, data, n)

    # -- the protocol ----------------------------------------------------------------------
    async def agenerate(
        self,
        prompts: Sequence[Messages],
        *,
        n: int,
        params: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> list[list[Generation]]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        gate = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout), limits=limits, headers=self._headers()
        ) as client:

            async def run(messages: Messages) -> list[Generation]:
                result = await self._one(client, gate, messages, n, params)
                if progress is not None:
                    progress(1)
                return result

            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(run(list(m))) for m in prompts]
            except ExceptionGroup as failed:  # the first failure, as it was raised
                raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        n: int,
        params: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> list[list[Generation]]:
        coroutine = self.agenerate(prompts, n=n, params=params, progress=progress)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        # Called from inside an event loop: run ours in a thread of its own.
        coroutine.close()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(self.generate, prompts, n=n, params=params, progress=progress).result()

    # -- adapters (vLLM's runtime LoRA API; VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) --------
    def _admin(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                with httpx.Client(timeout=self.timeout, headers=self._headers()) as client:
                    response = client.post(url, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in RETRY_STATUS:
                    return response
                last = f"HTTP {response.status_code}: {response.text[:500]}"
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, None))
        raise RemoteError(f"POST {url} failed after {self.max_retries + 1} attempts; last: {last}")

    def load_lora_adapter(self, name: str, path: str) -> bool:
        """Load the adapter at ``path`` (a folder the server can read) as model ``name``.

        Returns True when it was loaded now, False when the server already had it.
        """
        response = self._admin("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if response.status_code == 200:
            return True
        if response.status_code == 400 and "already been loaded" in response.text:
            return False
        raise RemoteError(
            f"loading LoRA adapter {name!r} from {path!r} into {self.base_url} failed: "
            f"HTTP {response.status_code}: {response.text[:500]}",
            status=response.status_code,
        )

    def unload_lora_adapter(self, name: str) -> bool:
        """Unload adapter ``name``; False when the server did not have it."""
        response = self._admin("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise RemoteError(
            f"unloading LoRA adapter {name!r} from {self.base_url} failed: "
            f"HTTP {response.status_code}: {response.text[:500]}",
            status=response.status_code,
        )

    def list_models(self) -> list[str]:
        with httpx.Client(timeout=self.timeout, headers=self._headers()) as client:
            response = client.get(f"{self.base_url}/v1/models")
        if response.status_code != 200:
            raise RemoteError(
                f"GET {self.base_url}/v1/models: HTTP {response.status_code}: {response.text[:300]}",
                status=response.status_code,
            )
        return [m["id"] for m in response.json().get("data", [])]

    def close(self) -> None:
        return None
