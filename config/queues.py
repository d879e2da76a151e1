"""Every Celery queue, in one place. Routing and worker start-up read only this enum."""

from enum import StrEnum


class Queue(StrEnum):
    DEFAULT = "default"
    """Short bookkeeping work: schedules, stats, exports."""
    GPU = "gpu"
    """Generation and training: one task at a time per GPU, acks_late, prefetch 1."""
