"""Generation jobs end to end: a real worker process, a tiny model, the test database."""

from __future__ import annotations

import os
import signal

import pytest

from feedback.models import Candidate, Item, Prompt
from inference import services
from inference.engines.base import SamplingParams
from inference.models import Engine, JobStatus, PairingMode
from inference.services import GenerationJobError

pytestmark = pytest.mark.django_db

PARAMS = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=1.0)


@pytest.fixture
def version(tiny_model_dir):
    return services.model_version_register(
        name="tiny", base_model=str(tiny_model_dir), engine_settings={"device": "cpu", "batch_size": 1}
    )


def _project(project_factory, prompts: int, **fields):
    project = project_factory(**fields)
    for i in range(prompts):
        messages = [{"role": "user", "content": f"Question {i}: " + "why " * i}]
        Prompt.objects.create(
            project=project, messages=messages, text=messages[0]["content"], content_hash=f"h{i}"
        )
    return project


def _run(job, **kwargs):
    assert services.generation_job_claim(job_id=job.pk)
    return services.generation_job_execute(job_id=job.pk, **kwargs)


def test_task_generates_candidates_items_and_progress(
    project_factory, version, django_capture_on_commit_callbacks
):
    project = _project(project_factory, 5)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.generation_job_create(
            project=project, model_versions=[version], n=2, sampling_params=PARAMS, chunk_size=2
        )
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.progress_done, job.progress_total, job.progress) == (5, 5, 1.0)
    candidates = Candidate.objects.filter(generation_job=job)
    assert candidates.count() == 10  # 2 distinct samples per prompt
    for c in candidates:
        assert c.model_version == version and c.finish_reason in ("stop", "length")
        assert 1 <= c.completion_tokens <= 8 and c.prompt_tokens > 0
        assert c.sampling_params == PARAMS.to_dict()
    assert job.items_created == 5 == Item.objects.filter(project=project).count()
    for item in Item.objects.filter(project=project):
        assert item.candidates.count() == 2
        assert {c.prompt_id for c in item.candidates.all()} == {item.prompt_id}
    assert "tokens/s" in job.log_tail and "succeeded" in job.log_tail
    # claimed once: running it again is refused
    assert not services.generation_job_claim(job_id=job.pk)


def test_resume_after_interruption_generates_nothing_twice(project_factory, version):
    project = _project(project_factory, 6)
    job = services.generation_job_create(
        project=project, model_versions=[version], n=2, sampling_params=PARAMS, chunk_size=2, enqueue=False
    )

    def kill_worker(prompt_ids, process):  # a real crash: SIGKILL the worker after chunk 1
        os.killpg(process.pid, signal.SIGKILL)

    job = _run(job, on_chunk=kill_worker)
    assert job.status == JobStatus.FAILED
    assert "killed by signal 9" in job.error
    first = {c.pk: (c.prompt_id, c.text) for c in Candidate.objects.filter(generation_job=job)}
    done_first = {pid for pid, _ in first.values()}
    assert 2 <= len(done_first) < 6 and job.progress_done == len(done_first)

    asked: list[int] = []
    services.generation_job_resume(job_id=job.pk, enqueue=False)
    job = _run(job, on_chunk=lambda ids, process: asked.extend(ids))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert not set(asked) & done_first  # nothing generated twice
    assert set(asked) | done_first == set(project.prompts.values_list("id", flat=True))
    after = {c.pk: (c.prompt_id, c.text) for c in Candidate.objects.filter(generation_job=job)}
    assert all(after[pk] == value for pk, value in first.items())  # the first run's work is kept
    for prompt in project.prompts.all():
        assert prompt.candidates.filter(model_version=version).count() == 2
    assert job.progress_done == job.progress_total == 6
    assert Item.objects.filter(project=project).count() == job.items_created == 6


def test_cancel_stops_a_running_job_and_a_queued_one(project_factory, version):
    project = _project(project_factory, 6)
    job = services.generation_job_create(
        project=project, model_versions=[version], n=1, sampling_params=PARAMS, chunk_size=1, enqueue=False
    )
    workers = []

    def cancel(prompt_ids, process):
        workers.append(process)
        services.generation_job_cancel(job_id=job.pk)

    job = _run(job, on_chunk=cancel)
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert job.progress_done == 1 < job.progress_total == 6
    assert Candidate.objects.filter(generation_job=job).count() == 1
    assert workers[0].poll() is not None  # the worker was stopped, not left running

    queued = services.generation_job_create(
        project=project, model_versions=[version], n=1, sampling_params=PARAMS, enqueue=False
    )
    assert services.generation_job_cancel(job_id=queued.pk).status == JobStatus.CANCELLED
    assert not services.generation_job_claim(job_id=queued.pk)


def test_versions_paired_against_each_other(project_factory, version, tiny_model_dir, tiny_adapter_dir):
    tuned = services.model_version_register(
        name="tiny-tuned",
        base_model=str(tiny_model_dir),
        adapter_path=str(tiny_adapter_dir),
        engine_settings={"device": "cpu"},
        parent=version,
    )
    project = _project(project_factory, 3)
    job = services.generation_job_create(
        project=project,
        model_versions=[version, tuned],
        n=2,
        sampling_params=PARAMS,
        pairing=PairingMode.VERSUS,
        enqueue=False,
    )
    job = _run(job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.progress_total == 6 == job.progress_done
    items = Item.objects.filter(project=project)
    assert items.count() == job.items_created == 6  # 2 per prompt: (a1, b1), (a2, b2)
    for item in items:
        assert {c.model_version_id for c in item.candidates.all()} == {version.pk, tuned.pk}


def test_errors_are_kept_on_the_job(project_factory, tmp_path):
    broken = services.model_version_register(name="broken", base_model=str(tmp_path / "nothing"))
    project = _project(project_factory, 2)
    job = services.generation_job_create(project=project, model_versions=[broken], n=1, enqueue=False)
    job = _run(job)
    assert job.status == JobStatus.FAILED
    assert "cannot load a tokenizer" in job.error or "cannot load a causal LM" in job.error
    assert "worker log" in job.error


def test_bad_job_requests_are_refused(project_factory, version, model_version):
    project = _project(project_factory, 1)
    other = _project(project_factory, 1)
    with pytest.raises(GenerationJobError, match="two or more versions"):
        services.generation_job_create(
            project=project, model_versions=[version], pairing="versus", enqueue=False
        )
    with pytest.raises(GenerationJobError, match="prompts not in"):
        services.generation_job_create(
            project=project,
            model_versions=[version],
            prompt_ids=list(other.prompts.values_list("id", flat=True)),
            enqueue=False,
        )
    assert model_version.engine == Engine.EXTERNAL
    with pytest.raises(GenerationJobError, match="imported responses"):
        services.generation_job_create(project=project, model_versions=[model_version], enqueue=False)
    job = services.generation_job_create(project=project, model_versions=[version], enqueue=False)
    with pytest.raises(GenerationJobError, match="only failed or cancelled"):
        services.generation_job_resume(job_id=job.pk, enqueue=False)


def test_openai_version_through_a_served_model(
    project_factory, tiny_generator, tiny_model_dir, tiny_adapter_dir, django_capture_on_commit_callbacks
):
    from inference.engines.server import ModelServer
    from inference.engines.transformers_engine import TransformersGenerator

    def loader(path):
        return TransformersGenerator(tiny_model_dir, adapter_path=path, device="cpu")

    with ModelServer(tiny_generator, model_name="tiny", adapter_loader=loader).start() as server:
        with django_capture_on_commit_callbacks(execute=True):
            remote = services.model_version_register(
                name="tiny-v2",
                base_model="tiny",
                adapter_path=str(tiny_adapter_dir),
                engine=Engine.OPENAI,
                engine_settings={"base_url": server.url},
            )
        # registered → loaded into the running server, no restart
        assert [m["id"] for m in server.models()["data"]] == ["tiny", "tiny-v2"]
        project = _project(project_factory, 3)
        job = services.generation_job_create(
            project=project, model_versions=[remote], n=2, sampling_params=PARAMS, enqueue=False
        )
        job = _run(job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert Candidate.objects.filter(generation_job=job, model_version=remote).count() == 6


def test_a_redelivered_task_takes_over_a_job_its_dead_worker_left_running(project_factory, version):
    project = _project(project_factory, 4)
    job = services.generation_job_create(
        project=project, model_versions=[version], n=1, sampling_params=PARAMS, chunk_size=2, enqueue=False
    )

    def worker_dies(prompt_ids, process):  # the Celery worker and its child die mid-job
        os.killpg(process.pid, signal.SIGKILL)
        raise SystemExit("worker lost")

    assert services.generation_job_claim(job_id=job.pk)
    with pytest.raises(SystemExit):
        services.generation_job_execute(job_id=job.pk, on_chunk=worker_dies)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING  # nobody is left to record anything
    done = set(Candidate.objects.filter(generation_job=job).values_list("prompt_id", flat=True))
    assert not services.generation_job_claim(job_id=job.pk)  # a first delivery does not take it
    assert services.generation_job_claim(job_id=job.pk, redelivered=True)
    asked: list[int] = []
    job = services.generation_job_execute(job_id=job.pk, on_chunk=lambda ids, p: asked.extend(ids))
    assert job.status == JobStatus.SUCCEEDED and not set(asked) & done
    assert Candidate.objects.filter(generation_job=job).count() == 4


def test_identical_outputs_are_kept_once(project_factory, version):
    """Greedy decoding gives n identical answers: each prompt keeps one candidate, and a run of the
    job again (resume) adds none."""
    project = _project(project_factory, 3)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    job = services.generation_job_create(
        project=project, model_versions=[version], n=3, sampling_params=greedy, enqueue=False
    )
    job = _run(job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    per_prompt = [Candidate.objects.filter(prompt=p).count() for p in Prompt.objects.filter(project=project)]
    assert per_prompt == [1, 1, 1]
