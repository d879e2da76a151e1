"""Model versions (with lineage) and the generation jobs that produce candidates."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class JobStatus(models.TextChoices):
    """The one life cycle of generation and training jobs."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Engine(models.TextChoices):
    TRANSFORMERS = "transformers", "transformers (CPU or GPU)"
    VLLM = "vllm", "vLLM in process"
    OPENAI = "openai", "OpenAI-compatible server (vLLM serve, serve_model)"
    EXTERNAL = "external", "Imported responses (no engine)"


class ModelVersion(models.Model):
    name = models.CharField(max_length=200, unique=True)
    base_model = models.CharField(
        max_length=500, blank=True, help_text="Local folder or hub id of the base weights."
    )
    adapter_path = models.CharField(
        max_length=1000, blank=True, help_text="LoRA adapter folder on top of the base, if any."
    )
    engine = models.CharField(max_length=16, choices=Engine.choices, default=Engine.TRANSFORMERS)
    engine_settings = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    training_run = models.OneToOneField(
        "training.TrainingRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="model_version",
        help_text="The run that produced these weights.",
    )
    is_demo = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class PairingMode(models.TextChoices):
    SAMPLES = "samples", "n samples of one version per item"
    VERSUS = "versus", "versions paired against each other"


class GenerationJob(models.Model):
    project = models.ForeignKey("feedback.Project", on_delete=models.CASCADE, related_name="generation_jobs")
    model_versions = models.ManyToManyField(ModelVersion, related_name="generation_jobs")
    prompt_ids = models.JSONField(
        null=True, blank=True, help_text="Prompts to generate for; null means all of the project."
    )
    n = models.PositiveSmallIntegerField(default=2, help_text="Responses per prompt and version.")
    sampling_params = models.JSONField(default=dict, blank=True)
    pairing = models.CharField(max_length=10, choices=PairingMode.choices, default=PairingMode.SAMPLES)
    chunk_size = models.PositiveIntegerField(default=8)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    items_created = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(n__gte=1), name="generationjob_n_positive"),
        ]

    @property
    def progress(self) -> float:
        return self.progress_done / self.progress_total if self.progress_total else 0.0

    def __str__(self) -> str:
        return f"Generation {self.pk} ({self.status})"
