"""Celery tasks of the inference app: take ids, call one service."""

from __future__ import annotations

from celery import shared_task

from config.queues import Queue
from inference import services


@shared_task(queue=Queue.GPU.value, acks_late=True)
def generation_job_run(job_id: int) -> str:
    """Claim a queued generation job and run it (the model lives in a child process)."""
    if not services.generation_job_claim(job_id=job_id):
        return "not claimed"
    return services.generation_job_execute(job_id=job_id).status
