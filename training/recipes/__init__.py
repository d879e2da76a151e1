"""Django-free training recipes: one config dataclass + one runner per method.

Each module runs alone (``python -m training.recipes.dpo --config run.yaml``) or under
``accelerate launch``; each reads a snapshot folder and writes a run folder (see ``runtime``).
"""

from __future__ import annotations

import importlib
from typing import Any

METHODS = ("reward", "ppo", "dpo", "kto", "orpo", "sft", "cpt")


def recipe(method: str) -> Any:
    """The module of one method: it has ``Config`` (its dataclass) and ``run(config) -> dict``."""
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; known: {', '.join(METHODS)}")
    return importlib.import_module(f"{__name__}.{method}")
