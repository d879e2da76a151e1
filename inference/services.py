"""Writes for model versions and generation jobs.

A generation job runs ``queued → running → succeeded | failed | cancelled``. The Celery task
claims it (``filter(status=QUEUED).update(status=RUNNING)``) and calls
``generation_job_execute``, which, per model version, starts the Django-free worker
(``python -m inference.engines.worker``) as a child process holding the model, hands it the
prompts that still lack candidates from that version, and stores each chunk the child returns
in one transaction (candidates, deduplicated, and the items built from them). So:

- resumable: a prompt with candidates from a version is never generated again for it;
- cancel: the flag is read between chunks and every second while a chunk runs; the child is
  killed and the job ends ``cancelled`` with what was stored so far;
- timeouts: the whole run (``GENERATION_JOB_TIMEOUT_S``) and the wait for any output
  (``GENERATION_IDLE_TIMEOUT_S``, loading included); the child is killed and the job fails;
- errors (the child's last message and the tail of its log) are kept on the job.
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
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from feedback import pii
from feedback.models import Candidate, Item, ItemCandidate, Project, Prompt
from inference.engines.base import SamplingParams
from inference.models import Engine, GenerationJob, JobStatus, ModelVersion, PairingMode

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 60
ChunkCallback = Callable[[list[int], "subprocess.Popen[str]"], None]
"""Called after each stored chunk with its prompt ids and the worker process."""


class GenerationJobError(ValueError):
    """A job cannot be created or changed as asked."""


class JobCancelled(Exception):
    pass


# -- model versions ---------------------------------------------------------------------------
@transaction.atomic
def model_version_register(
    *,
    name: str,
    base_model: str,
    adapter_path: str = "",
    engine: Engine | str = Engine.TRANSFORMERS,
    engine_settings: dict | None = None,
    parent: ModelVersion | None = None,
    is_demo: bool = False,
    training_run: Any = None,
) -> ModelVersion:
    """Register (or update) a version. An adapter version served by an OpenAI-compatible server
    (``engine="openai"``, ``engine_settings["base_url"]``) is loaded into that running server
    once the transaction commits (vLLM's ``/v1/load_lora_adapter``), without a restart."""
    defaults: dict[str, Any] = {
        "base_model": base_model,
        "adapter_path": adapter_path,
        "engine": Engine(engine),
        "engine_settings": engine_settings or {},
        "parent": parent,
        "is_demo": is_demo,
    }
    if training_run is not None:
        defaults["training_run"] = training_run
    version, _ = ModelVersion.objects.update_or_create(name=name, defaults=defaults)
    if version.engine == Engine.OPENAI and version.adapter_path and "base_url" in version.engine_settings:
        transaction.on_commit(lambda: model_version_load_adapter(version=version, quiet=True))
    return version


def model_version_load_adapter(*, version: ModelVersion, quiet: bool = False) -> bool:
    """Load the version's adapter into its running server under the version's name.

    Returns True if it was loaded now, False if the server had it. With ``quiet``, a server
    that cannot be reached is logged, not raised: generation loads the adapter again anyway.
    """
    from inference.engines.errors import RemoteError
    from inference.engines.openai_engine import OpenAIGenerator

    if version.engine != Engine.OPENAI or not version.adapter_path:
        raise GenerationJobError(f"{version.name}: only an adapter version on an OpenAI server loads")
    settings_ = dict(version.engine_settings)
    client = OpenAIGenerator(
        base_url=settings_["base_url"],
        model=version.base_model,
        api_key=settings_.get("api_key"),
        max_retries=int(settings_.get("max_retries", 2)),
        timeout=float(settings_.get("timeout", 120)),
    )
    try:
        return client.load_lora_adapter(version.name, version.adapter_path)
    except RemoteError:
        if not quiet:
            raise
        logger.warning("could not load adapter %s into %s now", version.name, settings_["base_url"])
        return False


# -- jobs: create, claim, cancel, resume ------------------------------------------------------
@transaction.atomic
def generation_job_create(
    *,
    project: Project,
    model_versions: Sequence[ModelVersion],
    n: int | None = None,
    prompt_ids: Sequence[int] | None = None,
    sampling_params: SamplingParams | None = None,
    pairing: PairingMode | str = PairingMode.SAMPLES,
    chunk_size: int = 8,
    created_by=None,
    enqueue: bool = True,
) -> GenerationJob:
    versions = list(dict.fromkeys(model_versions))
    if not versions:
        raise GenerationJobError("choose at least one model version")
    for version in versions:
        if version.engine == Engine.EXTERNAL:
            raise GenerationJobError(f"{version.name} holds imported responses: it cannot generate")
    pairing = PairingMode(pairing)
    if pairing == PairingMode.VERSUS:
        if len(versions) < 2:
            raise GenerationJobError("pairing versions against each other needs two or more versions")
        if project.responses_per_item < 2:
            raise GenerationJobError(f"{project.name} shows one response per item: nothing to pair")
    n = n or project.responses_per_item
    if n < 1:
        raise GenerationJobError(f"n must be >= 1, got {n}")
    if chunk_size < 1:
        raise GenerationJobError(f"chunk_size must be >= 1, got {chunk_size}")
    if prompt_ids is not None:
        prompt_ids = sorted(set(prompt_ids))
        found = set(Prompt.objects.filter(project=project, id__in=prompt_ids).values_list("id", flat=True))
        missing = [pid for pid in prompt_ids if pid not in found]
        if missing:
            raise GenerationJobError(f"prompts not in {project.name}: {missing[:20]}")
    job = GenerationJob.objects.create(
        project=project,
        n=n,
        prompt_ids=prompt_ids,
        sampling_params=(sampling_params or SamplingParams()).to_dict(),
        pairing=pairing,
        chunk_size=chunk_size,
        created_by=created_by,
    )
    job.model_versions.set(versions)
    if enqueue:
        _enqueue(job.pk)
    return job


def _enqueue(job_id: int) -> None:
    from inference.tasks import generation_job_run

    transaction.on_commit(lambda: generation_job_run.delay(job_id))


def generation_job_claim(*, job_id: int, redelivered: bool = False) -> bool:
    """Atomically move a queued job to running; False if someone else has it or it was cancelled.

    ``redelivered``: the broker handed the task out again because the worker that held it died
    (acks_late + reject_on_worker_lost); its job, left ``running``, is taken over and resumes.
    """
    statuses = [JobStatus.QUEUED] + ([JobStatus.RUNNING] if redelivered else [])
    return bool(
        GenerationJob.objects.filter(id=job_id, status__in=statuses, cancel_requested=False).update(
            status=JobStatus.RUNNING, started_at=timezone.now(), finished_at=None, error=""
        )
    )


@transaction.atomic
def generation_job_cancel(*, job_id: int) -> GenerationJob:
    """A queued job is cancelled at once; a running one stops within a second or so."""
    now = timezone.now()
    GenerationJob.objects.filter(id=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now
    )
    GenerationJob.objects.filter(id=job_id, status=JobStatus.RUNNING).update(cancel_requested=True)
    return GenerationJob.objects.get(id=job_id)


@transaction.atomic
def generation_job_resume(*, job_id: int, force: bool = False, enqueue: bool = True) -> GenerationJob:
    """Queue a failed or cancelled job again; it generates only what is still missing.

    ``force`` also takes back a job left ``running`` by a worker that died.
    """
    allowed = [JobStatus.FAILED, JobStatus.CANCELLED] + ([JobStatus.RUNNING] if force else [])
    updated = GenerationJob.objects.filter(id=job_id, status__in=allowed).update(
        status=JobStatus.QUEUED, cancel_requested=False, error="", finished_at=None
    )
    job = GenerationJob.objects.get(id=job_id)
    if not updated:
        raise GenerationJobError(
            f"generation job {job_id} is {job.status}: only failed or cancelled jobs resume"
        )
    if enqueue:
        _enqueue(job.pk)
    return job


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


def items_build_for_job(
    *, job: GenerationJob, versions: Sequence[ModelVersion], prompt_ids: Sequence[int]
) -> int:
    """Group the job's free candidates (in no item yet) of these prompts into items of k.

    ``samples``: each item holds k samples of one version. ``versus``: each item holds
    candidates of different versions (round robin over the versions), built once every version
    has answered the prompt.
    """
    project = job.project
    k = project.responses_per_item
    version_ids = [v.pk for v in versions]
    free = (
        Candidate.objects.filter(prompt_id__in=list(prompt_ids), model_version_id__in=version_ids)
        .exclude(items__project=project)
        .order_by("prompt_id", "id")
        .values_list("id", "prompt_id", "model_version_id")
    )
    grouped: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for cid, pid, vid in free:
        grouped[pid][vid].append(cid)
    groups: list[tuple[int, list[int]]] = []
    if job.pairing == PairingMode.VERSUS:
        answered = defaultdict(set)
        for pid, vid in (
            Candidate.objects.filter(prompt_id__in=list(grouped), model_version_id__in=version_ids)
            .values_list("prompt_id", "model_version_id")
            .distinct()
        ):
            answered[pid].add(vid)
        for pid, per_version in grouped.items():
            if answered[pid] != set(version_ids):
                continue
            queues = [list(per_version.get(vid, [])) for vid in version_ids]
            while sum(1 for q in queues if q) >= 2 and sum(len(q) for q in queues) >= k:
                # round robin, the versions with the most left first: every item mixes versions
                picked: list[int] = []
                while len(picked) < k:
                    for i in sorted(range(len(queues)), key=lambda i: -len(queues[i])):
                        if queues[i] and len(picked) < k:
                            picked.append(queues[i].pop(0))
                groups.append((pid, picked))
    else:
        for pid, per_version in grouped.items():
            for cids in per_version.values():
                for start in range(0, len(cids) - k + 1, k):
                    groups.append((pid, cids[start : start + k]))
    for pid, cids in groups:
        item = Item.objects.create(
            project=project, prompt_id=pid, annotations_required=project.annotations_required
        )
        ItemCandidate.objects.bulk_create(
            ItemCandidate(item=item, candidate_id=cid, position=i) for i, cid in enumerate(cids)
        )
    return len(groups)


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
