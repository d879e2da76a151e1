"""Writes for training runs, RM + PPO pipelines, schedules and active selection.

A run lives ``queued → running → succeeded | failed | cancelled`` on its row. The Celery task
(``training.tasks.training_run_run``, gpu queue) claims it with one conditional UPDATE and calls
``training_run_execute``, which starts the Django-free recipe
(``python -m training.recipes.<method> --config run-config.yaml``) as a child process and, every
``TRAINING_POLL_S`` seconds, copies its ``progress.json`` and the tail of its output into the row
and looks at the cancel flag and the clock. So:

- cancel: the child's process group is killed within a poll; the run ends ``cancelled``;
- timeout (``timeout_s`` or ``TRAINING_RUN_TIMEOUT_S``): killed, ``failed``;
- crash or kill: ``failed`` with the output's tail; the checkpoints stay, and
  ``training_run_requeue`` queues it again — the recipe resumes from its last checkpoint;
- a worker that dies leaves the row ``running`` with a stale heartbeat: the broker redelivers the
  task (acks_late) and the claim accepts a stale run, or ``training_runs_recover`` re-queues it.
  The child dies with its parent (PR_SET_PDEATHSIG), so two processes never train one folder;
- success: the recipe renames its ``final/`` folder into place only when complete; the run is
  marked ``succeeded`` and (for policy methods) a new ModelVersion with parent + training_run
  lineage is registered in the same transaction. Reward runs register no version: their model
  is recorded on the run, starts the PPO runs waiting on it, and scores open items for active
  selection.

The package: ``common`` (TrainingRunError, settings, run folder, weights and lineage, recipe-config
validation, enqueue), ``runs`` (create, RM + PPO pipeline, claim, cancel, requeue, recover),
``execution`` (the recipe child process and its polling), ``registration`` (a succeeded run: new
model version + lineage, dependents started), ``active_selection`` (reward-model scoring of open
items) and ``schedules`` (retrain when enough new labels arrived).
"""

from __future__ import annotations

from training.services.active_selection import items_prioritise_by_reward
from training.services.common import TrainingRunError, lineage_root, runs_dir, version_weights
from training.services.execution import (
    LOG_TAIL_LINES,
    PollCallback,
    latest_checkpoint_step,
    recipe_command,
    training_run_execute,
)
from training.services.runs import (
    REFERENCE_METHODS,
    training_pipeline_create_rm_ppo,
    training_run_cancel,
    training_run_claim,
    training_run_create,
    training_run_requeue,
    training_runs_recover,
)
from training.services.schedules import (
    SNAPSHOT_KIND,
    new_labels_since,
    training_schedule_check,
    training_schedule_delete,
    training_schedule_fire,
    training_schedule_save,
)

__all__ = [
    "LOG_TAIL_LINES",
    "REFERENCE_METHODS",
    "SNAPSHOT_KIND",
    "PollCallback",
    "TrainingRunError",
    "items_prioritise_by_reward",
    "latest_checkpoint_step",
    "lineage_root",
    "new_labels_since",
    "recipe_command",
    "runs_dir",
    "training_pipeline_create_rm_ppo",
    "training_run_cancel",
    "training_run_claim",
    "training_run_create",
    "training_run_execute",
    "training_run_requeue",
    "training_runs_recover",
    "training_schedule_check",
    "training_schedule_delete",
    "training_schedule_fire",
    "training_schedule_save",
    "version_weights",
]
