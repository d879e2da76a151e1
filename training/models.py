"""Training runs and what they produced. The recipes themselves live in training/recipes (no Django)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from inference.models import JobStatus


class Method(models.TextChoices):
    REWARD = "reward", "Reward model"
    PPO = "ppo", "PPO"
    DPO = "dpo", "DPO"
    KTO = "kto", "KTO"
    ORPO = "orpo", "ORPO"
    SFT = "sft", "SFT"
    CPT = "cpt", "Continued pretraining"


class TrainingRun(models.Model):
    method = models.CharField(max_length=8, choices=Method.choices)
    project = models.ForeignKey(
        "feedback.Project",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_runs",
        help_text="Whose labels it trains on (for the advisor, schedules and active selection).",
    )
    reward_run = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="dependent_runs",
        help_text="PPO: the reward run whose model scores its rollouts; it starts when that run succeeds.",
    )
    schedule = models.ForeignKey(
        "training.TrainingSchedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )
    config = models.JSONField(default=dict, blank=True)
    snapshot = models.ForeignKey(
        "feedback.DatasetSnapshot",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="training_runs",
    )
    parent_version = models.ForeignKey(
        "inference.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="training_runs",
    )
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)
    output_dir = models.CharField(max_length=1000, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life from the worker running it (stale = worker died)."
    )
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker claimed it.")
    timeout_s = models.PositiveIntegerField(
        default=0, help_text="Wall-clock limit; 0 = TRAINING_RUN_TIMEOUT_S."
    )

    class Meta:
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="trainingrun_status_heartbeat")]

    @property
    def progress(self) -> float:
        return self.progress_step / self.progress_total if self.progress_total else 0.0

    def __str__(self) -> str:
        return f"{self.method} run {self.pk} ({self.status})"


class Trigger(models.TextChoices):
    NIGHTLY = "nightly", "Every night (at hour, server time)"
    NEW_LABELS = "new_labels", "Whenever enough new labels arrived (checked every few minutes)"


class TrainingSchedule(models.Model):
    """Start a run by the clock; a django-celery-beat PeriodicTask (kept in step by the services) fires it.

    Each firing counts the labels the method needs that arrived since the schedule's last run; below
    ``min_new_labels`` it records why and starts nothing.
    """

    name = models.CharField(max_length=200, unique=True)
    project = models.ForeignKey(
        "feedback.Project", on_delete=models.CASCADE, related_name="training_schedules"
    )
    method = models.CharField(max_length=8, choices=Method.choices)
    config = models.JSONField(default=dict, blank=True, help_text="Recipe fields (YAML keys) for each run.")
    export_filters = models.JSONField(
        default=dict, blank=True, help_text="Extra export filters for the snapshot each run trains on."
    )
    parent_version = models.ForeignKey(
        "inference.ModelVersion",
        on_delete=models.PROTECT,
        related_name="training_schedules",
        help_text="Start from this version; with follow_latest, from its newest descendant trained here.",
    )
    follow_latest = models.BooleanField(
        default=True, help_text="Each run starts from the version the previous scheduled run produced."
    )
    trigger = models.CharField(max_length=12, choices=Trigger.choices, default=Trigger.NIGHTLY)
    hour = models.PositiveSmallIntegerField(default=2, help_text="Nightly: the hour (0-23).")
    check_every_minutes = models.PositiveIntegerField(default=15, help_text="new_labels: how often to count.")
    min_new_labels = models.PositiveIntegerField(
        default=1, help_text="Start only if at least this many new pairs/labels/demonstrations arrived."
    )
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_decision = models.TextField(blank=True, help_text="What the last firing did, and why.")
    last_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(hour__lte=23), name="trainingschedule_hour_0_23"),
            models.CheckConstraint(
                condition=models.Q(check_every_minutes__gte=1), name="trainingschedule_check_every_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name
