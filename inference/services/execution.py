"""Running a claimed job: a worker subprocess per model version, each chunk stored as it comes.

Timeouts, cancellation (read between chunks and every second) and the job's log tail live here;
the items of each chunk are built by ``inference.services.items``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from feedback import pii
from feedback.models import Candidate, Prompt
from inference.models import Engine, GenerationJob, JobStatus, ModelVersion
from inference.services.errors import GenerationJobError, JobCancelled
from inference.services.items import items_build_for_job

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 60
ChunkCallback = Callable[[list[int], "subprocess.Popen[str]"], None]
"""Called after each stored chunk with its prompt ids and the worker process."""


# -- jobs: running ----------------------------------------------------------------------------
def _timeouts() -> tuple[float, float]:
    total = float(getattr(settings, "GENERATION_JOB_TIMEOUT_S", 24 * 3600))
    idle = float(getattr(settings, "GENERATION_IDLE_TIMEOUT_S", 1800))
    return total, idle


def _selected_prompts(job: GenerationJob):
    prompts = Prompt.objects.filter(project=job.project)
    if job.prompt_ids is not None:
        prompts = prompts.filter(id__in=job.prompt_ids)
    return prompts


def _pending_prompts(job: GenerationJob, version: ModelVersion) -> list[Prompt]:
    # Resumable: prompts that already have candidates from this version are done.
    prompts = _selected_prompts(job).exclude(candidates__model_version=version).order_by("id")
    # Longest first: chunks then hold prompts of similar length (little padding), as the
    # bare engine's own length-sorted batches do.
    return sorted(prompts, key=lambda p: -len(p.text))


def _chunk_size(job: GenerationJob, version: ModelVersion) -> int:
    """Prompts per chunk: the job's, raised so that a chunk fills the engine's batches."""
    if version.engine in (Engine.VLLM, Engine.OPENAI):  # these batch better with many prompts
        return max(job.chunk_size, int(version.engine_settings.get("chunk_prompts", 256)))
    sampling = float(job.sampling_params.get("temperature", 0.8)) > 0
    rows_per_prompt = job.n if sampling else 1  # greedy: the engine generates one row per prompt
    batch_size = int(version.engine_settings.get("batch_size", 16))
    return max(job.chunk_size, batch_size // rows_per_prompt)


def _engine_settings(version: ModelVersion) -> dict[str, Any]:
    engine_settings = dict(version.engine_settings)
    engine_settings.pop("chunk_prompts", None)
    if version.engine == Engine.OPENAI and version.adapter_path:
        engine_settings["adapter_name"] = version.name
    return engine_settings


def _log(job: GenerationJob, lines: collections.deque[str], line: str) -> None:
    stamp = timezone.now().strftime("%H:%M:%S")
    lines.append(f"{stamp} {line}")
    GenerationJob.objects.filter(id=job.pk).update(log_tail="\n".join(lines))


@dataclass
class _Worker:
    process: subprocess.Popen[str]
    events: queue.Queue[str | None] = field(default_factory=queue.Queue)
    stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))

    @classmethod
    def start(cls, spec: dict[str, Any]) -> _Worker:
        root = str(Path(settings.BASE_DIR))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        process = subprocess.Popen(
            [sys.executable, "-m", "inference.engines.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=root,
            env=env,
            start_new_session=True,  # its own process group: a kill takes its children too
        )
        worker = cls(process)
        payload = json.dumps(spec)

        def feed() -> None:
            try:
                assert process.stdin is not None
                process.stdin.write(payload)
                process.stdin.close()
            except (BrokenPipeError, OSError):
                pass

        def read_stdout() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                worker.events.put(line)
            worker.events.put(None)

        def read_stderr() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                worker.stderr.append(line.rstrip("\n")[:500])

        for target in (feed, read_stdout, read_stderr):
            threading.Thread(target=target, daemon=True).start()
        return worker

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
        self.process.wait()

    def stderr_tail(self, lines: int = 15) -> str:
        return "\n".join(list(self.stderr)[-lines:])


def _store_chunk(
    job: GenerationJob,
    version: ModelVersion,
    versions: list[ModelVersion],
    prompts: dict[int, Prompt],
    results: list[dict[str, Any]],
) -> tuple[int, int, int]:
    """Candidates (deduplicated) and items for one chunk, in one transaction.

    Returns (prompts stored, items made, completion tokens generated).
    """
    tokens = 0
    with transaction.atomic():
        for result in results:
            prompt = prompts[int(result["id"])]
            seen: set[str] = set()
            for g in result["generations"]:
                tokens += int(g["completion_tokens"])
                text = pii.storable_text(g["text"])  # untrusted output: a NUL byte must not fail the chunk
                digest = pii.text_hash(text)
                if digest in seen:  # identical outputs are kept once
                    continue
                seen.add(digest)
                Candidate.objects.get_or_create(
                    prompt=prompt,
                    model_version=version,
                    text_hash=digest,
                    defaults={
                        "text": text,
                        "generation_job": job,
                        "sampling_params": job.sampling_params,
                        "finish_reason": g["finish_reason"],
                        "prompt_tokens": g["prompt_tokens"],
                        "completion_tokens": g["completion_tokens"],
                    },
                )
        made = items_build_for_job(job=job, versions=versions, prompt_ids=[int(r["id"]) for r in results])
        GenerationJob.objects.filter(id=job.pk).update(
            progress_done=F("progress_done") + len(results), items_created=F("items_created") + made
        )
    return len(results), made, tokens


def _cancel_requested(job: GenerationJob) -> bool:
    return GenerationJob.objects.filter(id=job.pk, cancel_requested=True).exists()


def _run_version(
    job: GenerationJob,
    version: ModelVersion,
    versions: list[ModelVersion],
    log: collections.deque[str],
    deadline: float,
    on_chunk: ChunkCallback | None,
) -> None:
    pending = _pending_prompts(job, version)
    if not pending:
        # Earlier runs generated everything: still build items a crash may have left unbuilt.
        items_build_for_job(
            job=job, versions=versions, prompt_ids=list(_selected_prompts(job).values_list("id", flat=True))
        )
        return
    _log(job, log, f"{version.name}: {len(pending)} prompts to generate ({version.engine})")
    spec = {
        "engine": version.engine,
        "model": version.base_model,
        "adapter": version.adapter_path or None,
        "settings": _engine_settings(version),
        "n": job.n,
        "params": job.sampling_params,
        "chunk_size": _chunk_size(job, version),
        "prompts": [{"id": p.pk, "messages": p.messages} for p in pending],
    }
    by_id = {p.pk: p for p in pending}
    _, idle_timeout = _timeouts()
    worker = _Worker.start(spec)
    last_event = time.monotonic()
    finished = False
    error = ""
    try:
        while True:
            try:
                line = worker.events.get(timeout=1.0)
            except queue.Empty:
                line = ""
            if line == "":  # nothing for a second: look at the flag and the clocks
                now = time.monotonic()
                if _cancel_requested(job):
                    raise JobCancelled()
                if now > deadline:
                    raise TimeoutError(f"the job ran past its time limit ({_timeouts()[0]:.0f} s)")
                if now - last_event > idle_timeout:
                    raise TimeoutError(f"the worker produced nothing for {idle_timeout:.0f} s")
                continue
            if line is None:
                break
            last_event = time.monotonic()
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                worker.stderr.append(line.rstrip("\n")[:500])
                continue
            kind = event.get("event")
            if kind == "loaded":
                _log(job, log, f"{version.name}: model loaded in {event['seconds']:.1f} s")
            elif kind == "chunk":
                done, made, tokens = _store_chunk(job, version, versions, by_id, event["results"])
                seconds = max(float(event["seconds"]), 1e-9)
                _log(
                    job,
                    log,
                    f"{version.name}: {done} prompts, {made} items, {tokens} tokens "
                    f"in {seconds:.1f} s ({tokens / seconds:.1f} tokens/s)",
                )
                if on_chunk is not None:
                    on_chunk([int(r["id"]) for r in event["results"]], worker.process)
                if _cancel_requested(job):
                    raise JobCancelled()
            elif kind == "error":
                error = str(event.get("message", "unknown error"))
            elif kind == "done":
                finished = True
    except BaseException:
        worker.kill()
        raise
    code = worker.process.wait()
    if not finished:
        reason = error or (
            f"the worker was killed by signal {-code}" if code < 0 else f"the worker exited with {code}"
        )
        tail = worker.stderr_tail()
        raise RuntimeError(f"{version.name}: {reason}" + (f"\n--- worker log ---\n{tail}" if tail else ""))


def generation_job_execute(*, job_id: int, on_chunk: ChunkCallback | None = None) -> GenerationJob:
    """Run a claimed (running) job to its end. Each chunk is committed as it finishes."""
    job = GenerationJob.objects.select_related("project").get(id=job_id)
    if job.status != JobStatus.RUNNING:
        raise GenerationJobError(f"generation job {job_id} is {job.status}, not running: claim it first")
    versions = list(job.model_versions.order_by("id"))
    selected = list(_selected_prompts(job).values_list("id", flat=True))
    done = sum(
        _selected_prompts(job).filter(candidates__model_version=v).distinct().count() for v in versions
    )
    GenerationJob.objects.filter(id=job.pk).update(
        progress_total=len(selected) * len(versions), progress_done=done
    )
    log: collections.deque[str] = collections.deque(
        [line for line in job.log_tail.splitlines() if line][-LOG_TAIL_LINES:], maxlen=LOG_TAIL_LINES
    )
    total_timeout, _ = _timeouts()
    deadline = time.monotonic() + total_timeout
    try:
        for version in versions:
            _run_version(job, version, versions, log, deadline, on_chunk)
    except JobCancelled:
        _log(job, log, "cancelled")
        GenerationJob.objects.filter(id=job.pk).update(status=JobStatus.CANCELLED, finished_at=timezone.now())
        return GenerationJob.objects.get(id=job.pk)
    except Exception as exc:
        logger.exception("generation job %s failed", job.pk)
        _log(job, log, f"failed: {type(exc).__name__}")
        GenerationJob.objects.filter(id=job.pk).update(
            status=JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        return GenerationJob.objects.get(id=job.pk)
    _log(job, log, "succeeded")
    GenerationJob.objects.filter(id=job.pk, status=JobStatus.RUNNING).update(
        status=JobStatus.SUCCEEDED, finished_at=timezone.now()
    )
    return GenerationJob.objects.get(id=job.pk)
