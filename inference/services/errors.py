"""The exceptions the generation-job services raise."""

from __future__ import annotations


class GenerationJobError(ValueError):
    """A job cannot be created or changed as asked."""


class JobCancelled(Exception):
    pass
