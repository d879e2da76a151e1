"""Training schedules: count the new labels since the last run, check and save a schedule with its
django-celery-beat task, delete it, and fire it (export a snapshot and start the run, or RM → PPO)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from feedback.models import BinaryLabel, Demonstration, PreferencePair, Project
from inference.models import JobStatus, ModelVersion
from training.models import Method, TrainingRun, TrainingSchedule, Trigger
from training.services.common import TrainingRunError, _validate_config
from training.services.runs import training_pipeline_create_rm_ppo, training_run_create

logger = logging.getLogger(__name__)

#: The snapshot kind each method reads when the app exports for it.
SNAPSHOT_KIND = {
    Method.REWARD: "preference",
    Method.PPO: "preference",
    Method.DPO: "preference",
    Method.ORPO: "preference",
    Method.KTO: "unpaired",
    Method.SFT: "sft",
}


# -- schedules ----------------------------------------------------------------------------------
def new_labels_since(
    *, project: Project, method: str, after_annotation_id: int, export_filters: dict[str, Any] | None = None
) -> int:
    """Labels of the kind ``method`` trains on, made after the given annotation id, counted under
    the export's annotation filters (the schedule's ``export_filters``: by default flagged
    annotators and gold items left out), so the threshold counts what the snapshot will hold."""
    from feedback.exports.services import freeze_filters
    from feedback.exports.spec import ExportSpec

    kind = SNAPSHOT_KIND.get(Method(method))
    if kind == "preference":
        qs = PreferencePair.objects.filter(is_tie=False)
    elif kind == "unpaired":
        qs = BinaryLabel.objects.all()
    elif kind == "sft":
        qs = Demonstration.objects.all()
    else:
        raise TrainingRunError(f"{method} runs on documents: it cannot be scheduled on new labels")
    spec = ExportSpec.from_dict({**(export_filters or {}), "kind": kind, "project_ids": [project.pk]})
    q = spec.annotation_q(freeze_filters(spec), prefix="annotation__")
    return qs.filter(q, annotation_id__gt=after_annotation_id).count()


def _schedule_cutoff(schedule: TrainingSchedule) -> int:
    last = schedule.last_run
    if last is not None and last.snapshot is not None:
        return int(last.snapshot.frozen.get("annotation_id_max") or 0)
    return 0


def training_schedule_check(*, schedule: TrainingSchedule) -> None:
    """Raise TrainingRunError if the schedule cannot work (method, hour, recipe config)."""
    if schedule.method == Method.CPT:
        raise TrainingRunError("continued pretraining reads documents: start it by hand")
    if schedule.trigger == Trigger.NIGHTLY and not 0 <= schedule.hour <= 23:
        raise TrainingRunError("hour must be 0-23")
    cfg = dict(schedule.config or {})
    if schedule.method == Method.PPO:
        reward_cfg = cfg.get("reward") or {}
        _validate_config(
            Method.REWARD, {**reward_cfg, "model_name_or_path": "m", "snapshot_dir": "s", "output_dir": "o"}
        )
        cfg = dict(cfg.get("ppo", {k: v for k, v in cfg.items() if k != "reward"}))
        cfg.setdefault("reward_model_path", "pending")
    _validate_config(
        schedule.method, {**cfg, "model_name_or_path": "m", "snapshot_dir": "s", "output_dir": "o"}
    )


@transaction.atomic
def training_schedule_save(*, schedule: TrainingSchedule) -> TrainingSchedule:
    """Save a schedule and keep its django-celery-beat PeriodicTask in step (crontab or interval)."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    training_schedule_check(schedule=schedule)
    schedule.save()
    if schedule.trigger == Trigger.NIGHTLY:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute="0", hour=str(schedule.hour), day_of_week="*", day_of_month="*", month_of_year="*",
            timezone=settings.TIME_ZONE,
        )  # fmt: skip
        when = {"crontab": crontab, "interval": None}
    else:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.check_every_minutes, period=IntervalSchedule.MINUTES
        )
        when = {"interval": interval, "crontab": None}
    fields = {
        "name": f"training schedule {schedule.pk}: {schedule.name}"[:200],
        "task": "training.tasks.training_schedule_fire",
        "args": json.dumps([schedule.pk]),
        "enabled": schedule.enabled,
        "queue": "default",
        **when,
    }
    task = schedule.periodic_task
    if task is None:
        task = PeriodicTask.objects.create(**fields)
        schedule.periodic_task = task
        TrainingSchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
    else:
        for key, value in fields.items():
            setattr(task, key, value)
        task.save()
    return schedule


@transaction.atomic
def training_schedule_delete(*, schedule: TrainingSchedule) -> None:
    """Delete a schedule and its django-celery-beat PeriodicTask (beat would fire it forever)."""
    task_id = schedule.periodic_task_id
    schedule.delete()
    if task_id is not None:
        from django_celery_beat.models import PeriodicTask

        PeriodicTask.objects.filter(pk=task_id).delete()


def _schedule_start_version(schedule: TrainingSchedule) -> ModelVersion:
    if schedule.follow_latest:
        latest = (
            ModelVersion.objects.filter(
                training_run__schedule=schedule, training_run__status=JobStatus.SUCCEEDED
            )
            .order_by("-created_at", "-id")
            .first()
        )
        if latest is not None:
            return latest
    return schedule.parent_version


def training_schedule_fire(*, schedule_id: int, now: datetime | None = None) -> TrainingRun | None:
    """One firing: enough new labels → export a snapshot and start the run (or RM → PPO); else
    record why and start nothing."""
    from feedback.exports.services import snapshot_create, snapshot_write

    now = now or timezone.now()
    schedule = (
        TrainingSchedule.objects.select_related("project", "last_run__snapshot")
        .filter(id=schedule_id)
        .first()
    )
    if schedule is None:  # deleted after beat read its entry
        logger.warning("training schedule %s no longer exists: nothing started", schedule_id)
        return None
    if not schedule.enabled:
        decision = "disabled: nothing started"
        TrainingSchedule.objects.filter(pk=schedule.pk).update(last_checked_at=now, last_decision=decision)
        return None
    busy = TrainingRun.objects.filter(schedule=schedule, status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
    if busy.exists():
        decision = f"run {busy.first().pk} of this schedule is still {busy.first().status}: nothing started"
        TrainingSchedule.objects.filter(pk=schedule.pk).update(last_checked_at=now, last_decision=decision)
        return None
    cutoff = _schedule_cutoff(schedule)
    fresh = new_labels_since(
        project=schedule.project,
        method=schedule.method,
        after_annotation_id=cutoff,
        export_filters=schedule.export_filters,
    )
    unit = {"preference": "pairs", "unpaired": "thumbs labels", "sft": "demonstrations"}[
        SNAPSHOT_KIND[Method(schedule.method)]
    ]
    if fresh < schedule.min_new_labels:
        decision = (
            f"{fresh} new {unit} since "
            + (f"run {schedule.last_run_id}" if schedule.last_run_id else "the start")
            + f", below the threshold of {schedule.min_new_labels}: nothing started"
        )
        TrainingSchedule.objects.filter(pk=schedule.pk).update(last_checked_at=now, last_decision=decision)
        return None
    kind = SNAPSHOT_KIND[Method(schedule.method)]
    snapshot = snapshot_create(
        name=f"{schedule.name} {now:%Y-%m-%d %H:%M}",
        spec={**(schedule.export_filters or {}), "kind": kind, "project_ids": [schedule.project_id]},
    )
    snapshot_write(snapshot=snapshot, formats=("jsonl",))
    start = _schedule_start_version(schedule)
    cfg = dict(schedule.config or {})
    with transaction.atomic():
        if schedule.method == Method.PPO:
            rm, run = training_pipeline_create_rm_ppo(
                snapshot=snapshot, parent_version=start, reward_config=cfg.get("reward"),
                ppo_config=cfg.get("ppo", {k: v for k, v in cfg.items() if k != "reward"}),
                project=schedule.project, schedule=schedule,
            )  # fmt: skip
            started = f"reward run {rm.pk} then PPO run {run.pk}"
        else:
            run = training_run_create(
                method=schedule.method, snapshot=snapshot, parent_version=start, config=cfg,
                project=schedule.project, schedule=schedule,
            )  # fmt: skip
            started = f"{schedule.method} run {run.pk}"
        decision = (
            f"{fresh} new {unit} (threshold {schedule.min_new_labels}): snapshot {snapshot.pk}, {started}"
        )
        TrainingSchedule.objects.filter(pk=schedule.pk).update(
            last_checked_at=now, last_decision=decision, last_run=run
        )
    return run
