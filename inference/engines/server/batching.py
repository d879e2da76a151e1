"""The request batcher: one generator on one thread, requests that arrive together merged into a batch;
requests whose client hung up are dropped."""

from __future__ import annotations

import collections
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from inference.engines.base import Generation, Generator, Messages, SamplingParams

logger = logging.getLogger(__name__)


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
