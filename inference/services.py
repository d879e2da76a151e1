"""Writes for model versions and generation jobs."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from feedback import pii
from feedback.models import Candidate, Project, Prompt
from feedback.services.items import items_build
from inference.engines.base import SamplingParams
from inference.models import Engine, GenerationJob, JobStatus, ModelVersion

logger = logging.getLogger(__name__)


@transaction.atomic
def model_version_register(
    *,
    name: str,
    base_model: str,
    adapter_path: str = "",
    engine: Engine | str = Engine.TRANSFORMERS,
    engine_settings: dict | None = None,
    parent: ModelVersion | None = None,
    is_demo: bool = False,
) -> ModelVersion:
    version, _ = ModelVersion.objects.update_or_create(
        name=name,
        defaults={
            "base_model": base_model,
            "adapter_path": adapter_path,
            "engine": Engine(engine),
            "engine_settings": engine_settings or {},
            "parent": parent,
            "is_demo": is_demo,
        },
    )
    return version


@transaction.atomic
def generation_job_create(
    *,
    project: Project,
    model_versions: Sequence[ModelVersion],
    n: int | None = None,
    prompt_ids: Sequence[int] | None = None,
    sampling_params: SamplingParams | None = None,
    chunk_size: int = 8,
    created_by=None,
    enqueue: bool = True,
) -> GenerationJob:
    job = GenerationJob.objects.create(
        project=project,
        n=n or project.responses_per_item,
        prompt_ids=list(prompt_ids) if prompt_ids is not None else None,
        sampling_params=(sampling_params or SamplingParams()).to_dict(),
        chunk_size=chunk_size,
        created_by=created_by,
    )
    job.model_versions.set(model_versions)
    if enqueue:
        from inference.tasks import generation_job_run

        transaction.on_commit(lambda: generation_job_run.delay(job.pk))
    return job


def generation_job_claim(*, job_id: int) -> bool:
    """Atomically move a queued job to running; False if someone else has it or it was cancelled."""
    return bool(
        GenerationJob.objects.filter(id=job_id, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING, started_at=timezone.now()
        )
    )


def _pending_prompts(job: GenerationJob, version: ModelVersion) -> list[Prompt]:
    prompts = Prompt.objects.filter(project=job.project).order_by("id")
    if job.prompt_ids is not None:
        prompts = prompts.filter(id__in=job.prompt_ids)
    # Resumable: prompts that already have candidates from this version are done.
    return list(prompts.exclude(candidates__model_version=version))


def generation_job_execute(*, job_id: int) -> GenerationJob:
    """Generate chunk by chunk; each chunk's candidates and items are committed as it finishes."""
    from inference.engines import load_generator

    job = GenerationJob.objects.get(id=job_id)
    params = SamplingParams.from_dict(job.sampling_params)
    try:
        for version in job.model_versions.all():
            pending = _pending_prompts(job, version)
            GenerationJob.objects.filter(id=job.pk).update(progress_total=job.progress_done + len(pending))
            if not pending:
                continue
            generator = load_generator(
                version.engine,
                model=version.base_model,
                adapter=version.adapter_path or None,
                **version.engine_settings,
            )
            try:
                for start in range(0, len(pending), job.chunk_size):
                    if GenerationJob.objects.filter(id=job.pk, cancel_requested=True).exists():
                        GenerationJob.objects.filter(id=job.pk).update(
                            status=JobStatus.CANCELLED, finished_at=timezone.now()
                        )
                        return GenerationJob.objects.get(id=job.pk)
                    chunk = pending[start : start + job.chunk_size]
                    outputs = generator.generate([p.messages for p in chunk], n=job.n, params=params)
                    with transaction.atomic():
                        for prompt, gens in zip(chunk, outputs, strict=True):
                            seen: set[str] = set()
                            for g in gens:
                                h = pii.text_hash(g.text)
                                if h in seen:  # identical outputs are deduplicated
                                    continue
                                seen.add(h)
                                Candidate.objects.get_or_create(
                                    prompt=prompt,
                                    model_version=version,
                                    text_hash=h,
                                    defaults={
                                        "text": g.text,
                                        "generation_job": job,
                                        "sampling_params": job.sampling_params,
                                        "finish_reason": g.finish_reason,
                                        "prompt_tokens": g.prompt_tokens,
                                        "completion_tokens": g.completion_tokens,
                                    },
                                )
                        made = items_build(project=job.project, prompt_ids=[p.pk for p in chunk])
                        job.progress_done += len(chunk)
                        job.items_created += made
                        GenerationJob.objects.filter(id=job.pk).update(
                            progress_done=job.progress_done, items_created=job.items_created
                        )
            finally:
                generator.close()
    except Exception as exc:
        logger.exception("generation job %s failed", job.pk)
        GenerationJob.objects.filter(id=job.pk).update(
            status=JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        raise
    GenerationJob.objects.filter(id=job.pk, status=JobStatus.RUNNING).update(
        status=JobStatus.SUCCEEDED, finished_at=timezone.now()
    )
    return GenerationJob.objects.get(id=job.pk)
