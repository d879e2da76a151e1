"""The OpenAI client against our OpenAI-compatible server over real HTTP (no mocks)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from inference.engines import load_generator
from inference.engines.base import SamplingParams
from inference.engines.errors import RemoteError
from inference.engines.openai_engine import OpenAIGenerator
from inference.engines.server import ModelServer
from inference.engines.transformers_engine import TransformersGenerator

GREEDY = SamplingParams(max_new_tokens=10, temperature=0)


class Flaky:
    """A generator that fails its first ``failures`` calls (the server answers them 500)."""

    name = "flaky"

    def __init__(self, inner, failures: int = 0, delay_first: float = 0.0) -> None:
        self.inner, self.failures, self.delay_first = inner, failures, delay_first
        self.calls = 0
        self.lock = threading.Lock()

    def generate(self, prompts, *, n, params, progress=None):
        with self.lock:
            self.calls += 1
            call = self.calls
        if call == 1 and self.delay_first:
            time.sleep(self.delay_first)
        if call <= self.failures:
            raise RuntimeError(f"injected failure {call}")
        return self.inner.generate(prompts, n=n, params=params, progress=progress)

    def close(self) -> None:
        pass


@pytest.fixture
def server(tiny_generator):
    with ModelServer(tiny_generator, model_name="tiny").start() as running:
        yield running


def client(url: str, **kwargs) -> OpenAIGenerator:
    kwargs.setdefault("backoff", 0.01)
    return OpenAIGenerator(base_url=url, model="tiny", **kwargs)


def test_n_samples_over_http_match_the_engine(server, tiny_generator, prompts):
    seen: list[int] = []
    remote = client(server.url, concurrency=4).generate(prompts, n=3, params=GREEDY, progress=seen.append)
    local = tiny_generator.generate(prompts, n=3, params=GREEDY)
    assert remote == local
    assert sum(seen) == len(prompts)
    sampled = client(server.url + "/v1/").generate(
        prompts, n=4, params=SamplingParams(max_new_tokens=8, temperature=1.0)
    )
    for samples, messages in zip(sampled, prompts, strict=True):
        assert len(samples) == 4 and len({g.text for g in samples}) > 1
        assert {g.prompt_tokens for g in samples} == {len(tiny_generator.encode(messages))}
        assert all(1 <= g.completion_tokens <= 8 for g in samples)


def test_usage_token_counts_mode_sends_n_single_requests(server, tiny_generator, prompts):
    remote = client(server.url, token_counts="usage")
    out = remote.generate(prompts[:2], n=3, params=GREEDY)
    assert remote.requests_sent == 6
    assert out == tiny_generator.generate(prompts[:2], n=3, params=GREEDY)


def test_stop_and_usage_block_over_http(server, tiny_generator, prompts):
    full = tiny_generator.generate(prompts[:1], n=1, params=GREEDY)[0][0].text
    stop = full[len(full) // 2 : len(full) // 2 + 1]
    body = {
        "model": "tiny",
        "messages": prompts[0],
        "n": 2,
        "max_tokens": 10,
        "temperature": 0,
        "stop": stop,
    }
    data = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30).json()
    choices = data["choices"]
    assert [c["finish_reason"] for c in choices] == ["stop", "stop"]
    assert choices[0]["message"]["content"] == full[: full.find(stop)]
    assert data["usage"]["completion_tokens"] == sum(c["completion_tokens"] for c in choices)
    assert data["usage"]["prompt_tokens"] == len(tiny_generator.encode(prompts[0]))


def test_retries_when_the_server_fails(tiny_generator, prompts):
    flaky = Flaky(tiny_generator, failures=2)
    with ModelServer(flaky, model_name="tiny").start() as running:
        remote = client(running.url, max_retries=3, concurrency=1)
        out = remote.generate(prompts[:1], n=2, params=GREEDY)
        assert out == tiny_generator.generate(prompts[:1], n=2, params=GREEDY)
        assert remote.requests_sent == 3 and flaky.calls == 3

    flaky = Flaky(tiny_generator, failures=10)
    with ModelServer(flaky, model_name="tiny").start() as running:
        remote = client(running.url, max_retries=2, concurrency=1)
        with pytest.raises(RemoteError, match=r"after 3 attempts; last: HTTP 500.*injected failure"):
            remote.generate(prompts[:1], n=1, params=GREEDY)
        assert remote.requests_sent == 3


def test_timeouts_are_retried_then_reported(tiny_generator, prompts):
    slow = Flaky(tiny_generator, delay_first=1.0)
    with ModelServer(slow, model_name="tiny").start() as running:
        remote = client(running.url, timeout=0.25, max_retries=8, concurrency=1)
        out = remote.generate(prompts[:1], n=1, params=GREEDY)
        assert out == tiny_generator.generate(prompts[:1], n=1, params=GREEDY)
        assert remote.requests_sent >= 2

    slow = Flaky(tiny_generator, delay_first=1.0)
    with ModelServer(slow, model_name="tiny").start() as running:
        remote = client(running.url, timeout=0.2, max_retries=0)
        with pytest.raises(RemoteError, match="after 1 attempts; last: ReadTimeout"):
            remote.generate(prompts[:1], n=1, params=GREEDY)


def test_connection_refused_and_client_errors(server, prompts):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nobody = client(f"http://127.0.0.1:{port}", max_retries=2)
    with pytest.raises(RemoteError, match="after 3 attempts; last: ConnectError"):
        nobody.generate(prompts[:1], n=1, params=GREEDY)

    wrong = OpenAIGenerator(base_url=server.url, model="no-such-model", backoff=0.01)
    with pytest.raises(RemoteError, match=r"HTTP 404.*no-such-model") as caught:
        wrong.generate(prompts[:1], n=1, params=GREEDY)
    assert caught.value.status == 404 and wrong.requests_sent == 1  # 4xx: not retried


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n must be between"),
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": True}, "stream"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "stop": 3}, "stop must be"),
    ],
)
def test_server_rejects_bad_requests(server, body, message):
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_server_rejects_invalid_json_and_lists_models(server):
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b"{nope",
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    assert [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]] == ["tiny"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_lora_adapter_loaded_into_a_running_server(tiny_model_dir, tiny_adapter_dir, prompts):
    base = TransformersGenerator(tiny_model_dir, device="cpu")

    def loader(path: str) -> TransformersGenerator:
        return TransformersGenerator(tiny_model_dir, adapter_path=path, device="cpu")

    expected = loader(str(tiny_adapter_dir)).generate(prompts, n=1, params=GREEDY)
    with ModelServer(base, model_name="tiny", adapter_loader=loader).start() as running:
        admin = client(running.url)
        assert admin.load_lora_adapter("v2", str(tiny_adapter_dir)) is True
        assert admin.load_lora_adapter("v2", str(tiny_adapter_dir)) is False  # already there
        assert admin.list_models() == ["tiny", "v2"]
        assert (
            OpenAIGenerator(base_url=running.url, model="v2").generate(prompts, n=1, params=GREEDY)
            == expected
        )
        # the registry path: load_generator loads the adapter and sends requests to it
        via_registry = load_generator(
            "openai",
            model="tiny",
            adapter=str(tiny_adapter_dir),
            base_url=running.url,
            adapter_name="v3",
        )
        assert via_registry.model == "v3"
        assert via_registry.generate(prompts, n=1, params=GREEDY) == expected
        assert admin.unload_lora_adapter("v2") is True
        assert admin.unload_lora_adapter("v2") is False
        with pytest.raises(RemoteError, match="cannot load the LoRA adapter"):
            admin.load_lora_adapter("bad", "/no/such/adapter")


def test_sync_generate_from_inside_an_event_loop(server, prompts):
    async def inside() -> list:
        return client(server.url).generate(prompts[:2], n=1, params=GREEDY)

    assert len(asyncio.run(inside())) == 2


def test_server_command_line(tiny_model_dir, tiny_generator, prompts):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inference.engines.server",
            "--model",
            str(tiny_model_dir),
            "--name",
            "tiny",
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not come up within 60 s")
        out = client(url).generate(prompts, n=2, params=GREEDY)
        assert out == tiny_generator.generate(prompts, n=2, params=GREEDY)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_server_drops_requests_whose_client_hung_up(tiny_generator, prompts):
    """Retries after timeouts do not pile up work: abandoned requests are not generated."""
    slow = Flaky(tiny_generator, delay_first=1.5)
    with ModelServer(slow, model_name="tiny").start() as running:
        remote = client(running.url, timeout=0.3, max_retries=10, concurrency=1)
        out = remote.generate(prompts[:1], n=1, params=GREEDY)
        assert out == tiny_generator.generate(prompts[:1], n=1, params=GREEDY)
        retries = remote.requests_sent - 1
        assert retries >= 3
        # the first call, then only requests still waiting on a live connection
        assert slow.calls <= 2 and running.dropped >= retries - 1
