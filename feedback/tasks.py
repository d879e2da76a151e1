"""Periodic bookkeeping for collection (scheduled by beat, see CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

import logging

from celery import shared_task

from config.queues import Queue
from feedback.models import Project
from feedback.quality.services import annotators_flag
from feedback.services.distribution import leases_reclaim

logger = logging.getLogger(__name__)


@shared_task(queue=Queue.DEFAULT.value)
def leases_reclaim_expired() -> int:
    """Delete expired leases (they already count for nothing in next(); this keeps the table small)."""
    return leases_reclaim()


@shared_task(queue=Queue.DEFAULT.value)
def annotators_flag_all() -> int:
    """Re-check every project's annotators against its quality threshold; returns how many changed."""
    changed = 0
    for project_id in Project.objects.filter(min_agreement__gt=0).values_list("id", flat=True):
        project = Project.objects.get(id=project_id)
        for change in annotators_flag(project=project):
            logger.info(
                "project %s: %s %s (%s)",
                project.name,
                change.username,
                "flagged" if change.flagged else "unflagged",
                change.reason,
            )
            changed += 1
    return changed
