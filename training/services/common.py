"""What the training-run services share: the error they raise, settings, the run folder, a model
version's weights and lineage root, recipe-config validation and queueing a run's Celery task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from inference.models import ModelVersion


class TrainingRunError(ValueError):
    """A run or schedule cannot be created or changed as asked."""


# -- helpers ----------------------------------------------------------------------------------
def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def runs_dir() -> Path:
    return Path(_setting("RUNS_DIR", Path(settings.DATA_DIR) / "runs"))


def version_weights(version: ModelVersion) -> str:
    """The local folder a recipe starts from: the adapter folder if any, else the base weights."""
    path = version.adapter_path or version.base_model
    if not path or not Path(path).is_dir():
        raise TrainingRunError(
            f"model version {version.name} has no local weights folder ({path or 'none'}); "
            "recipes load local folders only"
        )
    return path


def lineage_root(version: ModelVersion) -> ModelVersion:
    seen = {version.pk}
    while version.parent_id is not None and version.parent_id not in seen:
        version = version.parent  # type: ignore[assignment]
        seen.add(version.pk)
    return version


def _recipe(method: str):
    from training.recipes import recipe

    return recipe(method)


def _validate_config(method: str, config: dict[str, Any]) -> dict[str, Any]:
    from training.recipes.config import ConfigError

    try:
        cfg = _recipe(method).Config.from_dict(config)
    except ConfigError as exc:
        raise TrainingRunError(str(exc)) from None
    data = cfg.to_dict()
    data.pop("method", None)
    return data


def _enqueue(run_id: int) -> None:
    from training.tasks import training_run_run

    transaction.on_commit(lambda: training_run_run.delay(run_id))
