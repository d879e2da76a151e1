"""A succeeded run's outcome: the run marked succeeded and, for policy methods, a new ModelVersion
with parent + training_run lineage in the same transaction; a reward run starts the PPO runs
waiting on it and queues active selection."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from inference.models import Engine, JobStatus
from training.models import Method, TrainingRun
from training.services.common import _enqueue, _setting


def _version_name(run: TrainingRun) -> str:
    parent = run.parent_version.name if run.parent_version else "model"
    suffix = f"+{run.method}-run{run.pk}"
    return parent[: 200 - len(suffix)] + suffix


def _succeed(run: TrainingRun, result: dict[str, Any], tail: str) -> TrainingRun:
    from inference.services import model_version_register

    metrics = {
        "eval": result.get("eval", {}),
        "final_dir": result["final_dir"],
        "steps": result.get("steps"),
        "seconds": result.get("seconds"),
        "save_mode": result.get("save_mode"),
        "resumed_from_step": result.get("resumed_from_step", 0),
        "snapshot": result.get("snapshot"),
    }
    for key in ("documents", "blocks", "rows", "desirable_weight", "reward_model"):
        if key in result:
            metrics[key] = result[key]
    with transaction.atomic():
        updated = TrainingRun.objects.filter(id=run.pk, status=JobStatus.RUNNING).update(
            status=JobStatus.SUCCEEDED,
            finished_at=timezone.now(),
            heartbeat_at=timezone.now(),
            metrics=metrics,
            log_tail=tail,
            progress_step=result.get("steps") or 0,
        )
        if updated and run.method not in (Method.REWARD,):
            parent = run.parent_version
            adapter = result.get("save_mode") == "adapter"
            # vLLM in process loads any weights; a running OpenAI-compatible server (vllm serve)
            # takes a new LoRA adapter over the base it serves, loaded live on register.
            served_base = parent and parent.engine == Engine.OPENAI and adapter and not parent.adapter_path
            engine = (
                parent.engine
                if parent and (parent.engine == Engine.VLLM or served_base)
                else Engine.TRANSFORMERS
            )
            model_version_register(
                name=_version_name(run),
                base_model=run.config["model_name_or_path"] if adapter else result["final_dir"],
                adapter_path=result["final_dir"] if adapter else "",
                engine=engine,
                engine_settings=dict(parent.engine_settings) if parent and engine == parent.engine else {},
                parent=parent,
                training_run=run,
            )
    if updated and run.method == Method.REWARD:
        for dependent in TrainingRun.objects.filter(reward_run=run, status=JobStatus.QUEUED).values_list(
            "id", flat=True
        ):
            with transaction.atomic():
                _enqueue(dependent)
        if run.project_id and _setting("TRAINING_ACTIVE_SELECTION", True):
            from training.tasks import training_active_selection

            transaction.on_commit(lambda: training_active_selection.delay(run.pk))
    return TrainingRun.objects.get(id=run.pk)
