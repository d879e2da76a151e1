"""Generation jobs: create, claim, cancel, resume (and queue them on Celery)."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from feedback.models import Project, Prompt
from inference.engines.base import SamplingParams
from inference.models import Engine, GenerationJob, JobStatus, ModelVersion, PairingMode
from inference.services.errors import GenerationJobError


# -- jobs: create, claim, cancel, resume ------------------------------------------------------
@transaction.atomic
def generation_job_create(
    *,
    project: Project,
    model_versions: Sequence[ModelVersion],
    n: int | None = None,
    prompt_ids: Sequence[int] | None = None,
    sampling_params: SamplingParams | None = None,
    pairing: PairingMode | str = PairingMode.SAMPLES,
    chunk_size: int = 8,
    created_by=None,
    enqueue: bool = True,
) -> GenerationJob:
    versions = list(dict.fromkeys(model_versions))
    if not versions:
        raise GenerationJobError("choose at least one model version")
    for version in versions:
        if version.engine == Engine.EXTERNAL:
            raise GenerationJobError(f"{version.name} holds imported responses: it cannot generate")
    pairing = PairingMode(pairing)
    if pairing == PairingMode.VERSUS:
        if len(versions) < 2:
            raise GenerationJobError("pairing versions against each other needs two or more versions")
        if project.responses_per_item < 2:
            raise GenerationJobError(f"{project.name} shows one response per item: nothing to pair")
    n = n or project.responses_per_item
    if n < 1:
        raise GenerationJobError(f"n must be >= 1, got {n}")
    if chunk_size < 1:
        raise GenerationJobError(f"chunk_size must be >= 1, got {chunk_size}")
    if prompt_ids is not None:
        prompt_ids = sorted(set(prompt_ids))
        found = set(Prompt.objects.filter(project=project, id__in=prompt_ids).values_list("id", flat=True))
        missing = [pid for pid in prompt_ids if pid not in found]
        if missing:
            raise GenerationJobError(f"prompts not in {project.name}: {missing[:20]}")
    job = GenerationJob.objects.create(
        project=project,
        n=n,
        prompt_ids=prompt_ids,
        sampling_params=(sampling_params or SamplingParams()).to_dict(),
        pairing=pairing,
        chunk_size=chunk_size,
        created_by=created_by,
    )
    job.model_versions.set(versions)
    if enqueue:
        _enqueue(job.pk)
    return job


def _enqueue(job_id: int) -> None:
    from inference.tasks import generation_job_run

    transaction.on_commit(lambda: generation_job_run.delay(job_id))


def generation_job_claim(*, job_id: int, redelivered: bool = False) -> bool:
    """Atomically move a queued job to running; False if someone else has it or it was cancelled.

    ``redelivered``: the broker handed the task out again because the worker that held it died
    (acks_late + reject_on_worker_lost); its job, left ``running``, is taken over and resumes.
    """
    statuses = [JobStatus.QUEUED] + ([JobStatus.RUNNING] if redelivered else [])
    return bool(
        GenerationJob.objects.filter(id=job_id, status__in=statuses, cancel_requested=False).update(
            status=JobStatus.RUNNING, started_at=timezone.now(), finished_at=None, error=""
        )
    )


@transaction.atomic
def generation_job_cancel(*, job_id: int) -> GenerationJob:
    """A queued job is cancelled at once; a running one stops within a second or so."""
    now = timezone.now()
    GenerationJob.objects.filter(id=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now
    )
    GenerationJob.objects.filter(id=job_id, status=JobStatus.RUNNING).update(cancel_requested=True)
    return GenerationJob.objects.get(id=job_id)


@transaction.atomic
def generation_job_resume(*, job_id: int, force: bool = False, enqueue: bool = True) -> GenerationJob:
    """Queue a failed or cancelled job again; it generates only what is still missing.

    ``force`` also takes back a job left ``running`` by a worker that died.
    """
    allowed = [JobStatus.FAILED, JobStatus.CANCELLED] + ([JobStatus.RUNNING] if force else [])
    updated = GenerationJob.objects.filter(id=job_id, status__in=allowed).update(
        status=JobStatus.QUEUED, cancel_requested=False, error="", finished_at=None
    )
    job = GenerationJob.objects.get(id=job_id)
    if not updated:
        raise GenerationJobError(
            f"generation job {job_id} is {job.status}: only failed or cancelled jobs resume"
        )
    if enqueue:
        _enqueue(job.pk)
    return job
