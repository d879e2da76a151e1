"""Annotations made through the real distribution services (item_next → annotation_submit)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

_keys = itertools.count(1)


def annotate_project(project, users, decide: Callable[[Any, Any, list], dict], *, demonstration=None) -> int:
    """Each user takes items with item_next until none is left and submits decide(user, item, shown)."""
    from feedback.services.distribution import annotation_submit, item_next

    done = 0
    for user in users:
        while True:
            lease = item_next(project=project, user=user)
            if lease is None:
                break
            shown = lease.candidates_shown
            payload = decide(user, lease.item, shown)
            annotation_submit(
                user=user,
                item_id=lease.item_id,
                payload=payload,
                idempotency_key=f"k{next(_keys)}",
                demonstration=demonstration(user, lease.item, shown) if demonstration else "",
            )
            done += 1
    return done


def shorter_first(shown) -> list[int]:
    return [c.id for c in sorted(shown, key=lambda c: (len(c.text), c.id))]


@pytest.fixture
def annotate():
    return annotate_project
