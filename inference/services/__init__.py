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

Where the code lives:

- ``errors``: ``GenerationJobError``, ``JobCancelled``;
- ``versions``: ``model_version_register``, ``model_version_load_adapter``;
- ``jobs``: ``generation_job_create`` / ``_claim`` / ``_cancel`` / ``_resume`` (and queueing);
- ``execution``: ``generation_job_execute`` (the worker process, chunks, timeouts, cancel, log);
- ``items``: ``items_build_for_job`` (candidates grouped into items).
"""

from __future__ import annotations

from inference.services.errors import GenerationJobError, JobCancelled
from inference.services.execution import LOG_TAIL_LINES, ChunkCallback, generation_job_execute
from inference.services.items import items_build_for_job
from inference.services.jobs import (
    generation_job_cancel,
    generation_job_claim,
    generation_job_create,
    generation_job_resume,
)
from inference.services.versions import model_version_load_adapter, model_version_register

__all__ = [
    "LOG_TAIL_LINES",
    "ChunkCallback",
    "GenerationJobError",
    "JobCancelled",
    "generation_job_cancel",
    "generation_job_claim",
    "generation_job_create",
    "generation_job_execute",
    "generation_job_resume",
    "items_build_for_job",
    "model_version_load_adapter",
    "model_version_register",
]
