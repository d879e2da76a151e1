"""The generation worker: a child process that holds the model, Django-free.

The job runner (``inference.services``) starts ``python -m inference.engines.worker``, writes
one JSON spec to its stdin and reads JSON lines from its stdout, one per finished chunk::

    spec  {"engine", "model", "adapter", "settings", "n", "params", "chunk_size",
           "prompts": [{"id": 1, "messages": [...]}, ...]}
    out   {"event": "loaded", "seconds": 3.2}
          {"event": "chunk", "seconds": 1.1, "results": [{"id": 1, "generations": [
              {"text", "finish_reason", "prompt_tokens", "completion_tokens"}, ...]}, ...]}
          {"event": "done"}

Anything else the libraries print goes to stderr (the runner keeps its tail as the job log).
A crash, a kill or a timeout loses at most the chunk in flight: the runner stores each chunk
as it arrives, and a resumed job skips the prompts that already have candidates.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict
from typing import IO, Any

from inference.engines.base import SamplingParams


def _emit(out: IO[str], payload: dict[str, Any]) -> None:
    out.write(json.dumps(payload) + "\n")
    out.flush()


def run(spec: dict[str, Any], out: IO[str]) -> None:
    from inference.engines import load_generator

    started = time.perf_counter()
    settings = dict(spec.get("settings") or {})
    generator = load_generator(
        spec["engine"], model=spec["model"], adapter=spec.get("adapter") or None, **settings
    )
    _emit(out, {"event": "loaded", "seconds": round(time.perf_counter() - started, 3)})
    params = SamplingParams.from_dict(spec["params"])
    n = int(spec["n"])
    chunk_size = max(1, int(spec.get("chunk_size") or 8))
    prompts = spec["prompts"]
    try:
        for start in range(0, len(prompts), chunk_size):
            chunk = prompts[start : start + chunk_size]
            began = time.perf_counter()
            outputs = generator.generate([p["messages"] for p in chunk], n=n, params=params)
            results = [
                {"id": p["id"], "generations": [asdict(g) for g in gens]}
                for p, gens in zip(chunk, outputs, strict=True)
            ]
            seconds = round(time.perf_counter() - began, 4)
            _emit(out, {"event": "chunk", "seconds": seconds, "results": results})
    finally:
        generator.close()
    _emit(out, {"event": "done"})


def main() -> int:
    # The protocol owns the real stdout; whatever else prints goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr
    threads = os.environ.get("ARBITER_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        spec = json.loads(sys.stdin.read())
        run(spec, protocol)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _emit(protocol, {"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
