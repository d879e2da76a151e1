"""Celery tasks of the inference app: take ids, call one service."""

from __future__ import annotations

from celery import shared_task

from config.queues import Queue
from inference import services


@shared_task(bind=True, queue=Queue.GPU.value, acks_late=True, reject_on_worker_lost=True)
def generation_job_run(self, job_id: int) -> str:
    """Claim a queued generation job and run it (the model lives in a child process).

    A task redelivered after its worker died takes over the job it left running; the job
    resumes, generating only the prompts that still lack candidates.
    """
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    if not services.generation_job_claim(job_id=job_id, redelivered=redelivered):
        return "not claimed"
    return services.generation_job_execute(job_id=job_id).status
