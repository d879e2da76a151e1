from __future__ import annotations

from celery import shared_task

from config.queues import Queue
from inference import services


@shared_task(queue=Queue.GPU.value, acks_late=True)
def generation_job_run(job_id: int) -> None:
    if not services.generation_job_claim(job_id=job_id):
        return
    services.generation_job_execute(job_id=job_id)
