"""A run's life on its row: create (one run, or RM + PPO as a pipeline), claim, cancel, re-queue
and recover runs left by a dead worker."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from feedback.models import DatasetSnapshot, Project
from inference.models import JobStatus, ModelVersion
from training.models import Method, TrainingRun, TrainingSchedule
from training.services.common import (
    TrainingRunError,
    _enqueue,
    _recipe,
    _setting,
    _validate_config,
    lineage_root,
    runs_dir,
    version_weights,
)

#: Methods with a frozen reference policy: the lineage's original base is their default reference.
REFERENCE_METHODS = (Method.DPO, Method.KTO, Method.PPO)


# -- create ------------------------------------------------------------------------------------
@transaction.atomic
def training_run_create(
    *,
    method: Method | str,
    parent_version: ModelVersion,
    snapshot: DatasetSnapshot | None = None,
    documents_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    project: Project | None = None,
    reward_run: TrainingRun | None = None,
    schedule: TrainingSchedule | None = None,
    created_by=None,
    timeout_s: int = 0,
    enqueue: bool = True,
) -> TrainingRun:
    """A queued run whose recipe config is validated now (so a bad field fails here, not on the GPU).

    ``config`` holds recipe fields; the app fills in the paths: the start model (the parent
    version's weights), the snapshot folder (or ``documents_dir`` for cpt), the run folder, the
    reference (the lineage's original base, unless the config names one) and, for PPO, the reward
    model of ``reward_run``.
    """
    method = Method(method)
    config = dict(config or {})
    for key in ("model_name_or_path", "snapshot_dir", "output_dir"):
        if key in config:
            raise TrainingRunError(f"{key} is set by the app; leave it out of the config")
    if method == Method.CPT:
        if documents_dir is None or not Path(documents_dir).exists():
            raise TrainingRunError(
                "continued pretraining needs documents_dir: a folder of .txt/.md/.jsonl documents"
            )
        data_dir = str(Path(documents_dir).resolve())
        if snapshot is not None:
            raise TrainingRunError("continued pretraining reads documents, not a label snapshot")
    else:
        if snapshot is None:
            raise TrainingRunError(f"{method.label} needs a written snapshot")
        if (
            snapshot.status != "written"
            or not snapshot.path
            or not Path(snapshot.path, "manifest.json").exists()
        ):
            raise TrainingRunError(f"snapshot {snapshot.pk} is not written yet (status {snapshot.status})")
        kinds = _recipe(method).Config.SNAPSHOT_KINDS
        if snapshot.kind not in kinds:
            raise TrainingRunError(f"{method.label} reads {list(kinds)} snapshots, not {snapshot.kind!r}")
        data_dir = snapshot.path
        if project is None:
            project = snapshot.projects.order_by("id").first()
    start = version_weights(parent_version)
    if method == Method.PPO:
        if reward_run is None and not config.get("reward_model_path"):
            raise TrainingRunError("PPO needs a reward run (or reward_model_path in its config)")
        if reward_run is not None:
            if reward_run.method != Method.REWARD:
                raise TrainingRunError(f"run {reward_run.pk} is a {reward_run.method} run, not a reward run")
            if reward_run.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise TrainingRunError(f"reward run {reward_run.pk} is {reward_run.status}")
            config["reward_model_path"] = str(Path(reward_run.output_dir) / "final")
    elif reward_run is not None:
        raise TrainingRunError("only PPO runs depend on a reward run")
    if method in REFERENCE_METHODS and not config.get("ref_model_name_or_path"):
        root = lineage_root(parent_version)
        if root.pk != parent_version.pk:
            config["ref_model_name_or_path"] = version_weights(root)  # keep the original base as reference
    # Validate with a placeholder run folder, then store the resolved config with the real one.
    full = {
        **config,
        "model_name_or_path": start,
        "snapshot_dir": data_dir,
        "output_dir": str(runs_dir() / "pending"),
    }
    resolved = _validate_config(method, full)
    run = TrainingRun.objects.create(
        method=method,
        config=resolved,
        snapshot=snapshot,
        parent_version=parent_version,
        project=project,
        reward_run=reward_run,
        schedule=schedule,
        created_by=created_by
        if created_by is not None and getattr(created_by, "is_authenticated", False)
        else None,
        timeout_s=timeout_s,
    )
    run.output_dir = str(runs_dir() / f"run-{run.pk}")
    run.config = {**resolved, "output_dir": run.output_dir}
    run.save(update_fields=["output_dir", "config"])
    if enqueue and (reward_run is None or reward_run.status == JobStatus.SUCCEEDED):
        _enqueue(run.pk)
    return run


@transaction.atomic
def training_pipeline_create_rm_ppo(
    *,
    snapshot: DatasetSnapshot,
    parent_version: ModelVersion,
    reward_config: dict[str, Any] | None = None,
    ppo_config: dict[str, Any] | None = None,
    ppo_snapshot: DatasetSnapshot | None = None,
    project: Project | None = None,
    schedule: TrainingSchedule | None = None,
    created_by=None,
    enqueue: bool = True,
) -> tuple[TrainingRun, TrainingRun]:
    """RM + PPO as one pipeline: a reward run, and a PPO run that starts when it succeeds."""
    common = {
        "parent_version": parent_version,
        "project": project,
        "schedule": schedule,
        "created_by": created_by,
    }
    rm = training_run_create(
        method=Method.REWARD, snapshot=snapshot, config=reward_config, enqueue=enqueue, **common
    )
    ppo = training_run_create(
        method=Method.PPO,
        snapshot=ppo_snapshot or snapshot,
        config=ppo_config,
        reward_run=rm,
        enqueue=False,  # started by the reward run's success
        **common,
    )
    return rm, ppo


# -- claim, cancel, requeue, recover ----------------------------------------------------------
def _stale_before(now: datetime) -> datetime:
    return now - timedelta(seconds=float(_setting("TRAINING_STALE_S", 300)))


def training_run_claim(*, run_id: int) -> bool:
    """Move a queued run (or one left running by a dead worker) to running, atomically.

    A PPO run waits for its reward run: it is not claimed before that run succeeded.
    """
    now = timezone.now()
    waiting = TrainingRun.objects.filter(id=run_id, reward_run__isnull=False).exclude(
        reward_run__status=JobStatus.SUCCEEDED
    )
    if waiting.exists():
        return False
    claimable = Q(status=JobStatus.QUEUED) | Q(status=JobStatus.RUNNING, heartbeat_at__lt=_stale_before(now))
    return bool(
        TrainingRun.objects.filter(claimable, id=run_id, cancel_requested=False).update(
            status=JobStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            error="",
            attempts=F("attempts") + 1,
        )
    )


@transaction.atomic
def training_run_cancel(*, run_id: int) -> TrainingRun:
    """A queued run is cancelled at once (and the PPO runs waiting on it fail); a running one
    stops within a poll."""
    now = timezone.now()
    if TrainingRun.objects.filter(id=run_id, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now
    ):
        _fail_dependents(run_id, f"reward run {run_id} was cancelled")
    TrainingRun.objects.filter(id=run_id, status=JobStatus.RUNNING).update(cancel_requested=True)
    return TrainingRun.objects.get(id=run_id)


@transaction.atomic
def training_run_requeue(*, run_id: int, force: bool = False, enqueue: bool = True) -> TrainingRun:
    """Queue a failed or cancelled run again: the recipe resumes from its last checkpoint.

    ``force`` also takes back a run left ``running`` (a worker that died)."""
    allowed = [JobStatus.FAILED, JobStatus.CANCELLED] + ([JobStatus.RUNNING] if force else [])
    updated = TrainingRun.objects.filter(id=run_id, status__in=allowed).update(
        status=JobStatus.QUEUED, cancel_requested=False, error="", finished_at=None
    )
    run = TrainingRun.objects.get(id=run_id)
    if not updated:
        raise TrainingRunError(
            f"run {run_id} is {run.status}: only failed or cancelled runs are queued again"
        )
    # PPO runs that failed because this reward run failed wait for it again.
    TrainingRun.objects.filter(reward_run_id=run_id, status=JobStatus.FAILED).update(
        status=JobStatus.QUEUED, error="", finished_at=None
    )
    if enqueue:
        _enqueue(run.pk)
    return run


def training_runs_recover(*, now: datetime | None = None, enqueue: bool = True) -> list[int]:
    """Re-queue runs whose worker died (running, heartbeat older than TRAINING_STALE_S)."""
    now = now or timezone.now()
    ids = list(
        TrainingRun.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=_stale_before(now)).values_list(
            "id", flat=True
        )
    )
    requeued = []
    for run_id in ids:
        if TrainingRun.objects.filter(
            id=run_id, status=JobStatus.RUNNING, heartbeat_at__lt=_stale_before(now)
        ).update(status=JobStatus.QUEUED):
            requeued.append(run_id)
            if enqueue:
                with transaction.atomic():
                    _enqueue(run_id)
    return requeued


def _fail_dependents(run_id: int, why: str) -> None:
    TrainingRun.objects.filter(reward_run_id=run_id, status=JobStatus.QUEUED).update(
        status=JobStatus.FAILED, error=why, finished_at=timezone.now()
    )
