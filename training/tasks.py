"""Celery tasks of the training app: take ids, call one service."""

from __future__ import annotations

import logging

from celery import shared_task

from config.queues import Queue
from training import services

logger = logging.getLogger(__name__)


@shared_task(queue=Queue.GPU.value, acks_late=True, reject_on_worker_lost=True)
def training_run_run(run_id: int) -> str:
    """Claim a queued run (or one whose worker died) and run its recipe in a child process."""
    if not services.training_run_claim(run_id=run_id):
        return "not claimed"
    return services.training_run_execute(run_id=run_id).status


@shared_task(queue=Queue.GPU.value, acks_late=True)
def training_active_selection(run_id: int) -> int:
    """Score open items with a finished reward run's model: Item.priority for the priority order.

    A failure here leaves the priorities as they were and never touches the reward run."""
    try:
        return services.items_prioritise_by_reward(run_id=run_id)
    except Exception:
        logger.exception("active selection after reward run %s failed", run_id)
        return -1


@shared_task(queue=Queue.DEFAULT.value)
def training_schedule_fire(schedule_id: int) -> int | None:
    """Fired by django-celery-beat: start a run if enough new labels arrived, else record why."""
    run = services.training_schedule_fire(schedule_id=schedule_id)
    return run.pk if run else None


@shared_task(queue=Queue.DEFAULT.value)
def training_runs_recover() -> list[int]:
    """Re-queue runs left running by a worker that died (their recipe resumes from its checkpoint)."""
    return services.training_runs_recover()
