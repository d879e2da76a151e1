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

    @property
    def progress(self) -> float:
        return self.progress_step / self.progress_total if self.progress_total else 0.0

    def __str__(self) -> str:
        return f"{self.method} run {self.pk} ({self.status})"
