"""API, pages and commands of generation (real HTTP for serve_model, a real worker for jobs)."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from feedback.models import Candidate, Prompt
from feedback.services.projects import membership_set
from inference import services
from inference.engines.base import SamplingParams
from inference.engines.openai_engine import OpenAIGenerator
from inference.models import GenerationJob, JobStatus
from inference.serving import model_server_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(tiny_model_dir):
    return services.model_version_register(
        name="tiny", base_model=str(tiny_model_dir), engine_settings={"device": "cpu"}
    )


@pytest.fixture
def project(project_factory):
    project = project_factory()
    for i in range(3):
        messages = [{"role": "user", "content": f"Prompt {i}"}]
        Prompt.objects.create(project=project, messages=messages, text=f"Prompt {i}", content_hash=f"p{i}")
    return project


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_api_creates_runs_and_reports_a_job(
    user_factory, project, version, django_capture_on_commit_callbacks
):
    admin = user_factory()
    membership_set(project=project, user=admin, role="admin")
    body = {
        "project": project.pk,
        "model_versions": [version.pk],
        "n": 2,
        "max_new_tokens": 6,
        "temperature": 1.0,
        "chunk_size": 2,
    }
    with django_capture_on_commit_callbacks(execute=True):  # the eager Celery task runs the job
        response = _client(admin).post("/api/v1/generation-jobs/create/", body, format="json")
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    detail = _client(admin).get(f"/api/v1/generation-jobs/{job_id}/").json()
    assert detail["status"] == "succeeded", detail["error"]
    assert detail["progress"] == 1.0 and detail["items_created"] == 3
    assert detail["stats"]["candidates"] == 6 and detail["stats"]["tokens"] > 0
    listed = _client(admin).get(f"/api/v1/generation-jobs/?project={project.pk}").json()
    assert [j["id"] for j in listed["results"]] == [job_id]
    versions = _client(admin).get("/api/v1/model-versions/").json()
    assert "tiny" in [v["name"] for v in versions["results"]]


def test_api_cancel_resume_and_permissions(user_factory, project, version):
    admin, annotator = user_factory(), user_factory()
    membership_set(project=project, user=admin, role="admin")
    membership_set(project=project, user=annotator, role="annotator")
    body = {"project": project.pk, "model_versions": [version.pk]}
    assert _client(annotator).post("/api/v1/generation-jobs/create/", body, format="json").status_code == 403
    response = _client(admin).post("/api/v1/generation-jobs/create/", body, format="json")
    job_id = response.json()["id"]  # on_commit never fires in this test: the job stays queued
    assert response.json()["status"] == "queued"
    assert _client(annotator).get(f"/api/v1/generation-jobs/{job_id}/").status_code == 403
    assert _client(annotator).get("/api/v1/generation-jobs/").json()["results"] == []
    assert _client(admin).post(f"/api/v1/generation-jobs/{job_id}/resume/").status_code == 409
    cancelled = _client(admin).post(f"/api/v1/generation-jobs/{job_id}/cancel/").json()
    assert cancelled["status"] == "cancelled"
    resumed = _client(admin).post(f"/api/v1/generation-jobs/{job_id}/resume/").json()
    assert resumed["status"] == "queued"
    bad = _client(admin).post(
        "/api/v1/generation-jobs/create/",
        {**body, "pairing": "versus"},
        format="json",
    )
    assert bad.status_code == 400 and "two or more versions" in bad.json()["message"]


def test_pages_show_progress_and_start_jobs(client, user_factory, project, version):
    staff = user_factory(is_staff=True)
    client.force_login(staff)
    page = client.get("/generation/")
    assert page.status_code == 200 and b"Start a job" in page.content
    response = client.post(
        "/generation/",
        {"project": project.pk, "model_versions": [version.pk], "n": 1, "max_new_tokens": 4},
    )
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response.url == f"/generation/{job.pk}/"
    detail = client.get(f"/generation/{job.pk}/")
    assert b'<progress id="job-progress"' in detail.content and b"Cancel" in detail.content
    client.post(f"/generation/{job.pk}/cancel/")
    assert GenerationJob.objects.get().status == JobStatus.CANCELLED
    annotator = user_factory()
    client.force_login(annotator)
    assert client.get(f"/generation/{job.pk}/").status_code == 403


def test_generate_command_runs_resumes_and_cancels(project, version, capsys):
    call_command(
        "generate",
        "--project",
        project.slug,
        "--model-version",
        "tiny",
        "--n",
        "2",
        "--max-new-tokens",
        "5",
        "--temperature",
        "1.0",
        "--chunk-size",
        "2",
    )
    job = GenerationJob.objects.get()
    assert job.status == JobStatus.SUCCEEDED and job.progress_done == 3
    assert "succeeded; 3/3 prompts" in capsys.readouterr().out
    assert Candidate.objects.filter(generation_job=job).count() == 6
    with pytest.raises(CommandError, match="No model version 'nope'"):
        call_command("generate", "--project", project.slug, "--model-version", "nope")
    queued = services.generation_job_create(project=project, model_versions=[version], enqueue=False)
    call_command("generate", "--cancel", str(queued.pk))
    assert GenerationJob.objects.get(pk=queued.pk).status == JobStatus.CANCELLED
    call_command("generate", "--resume", str(queued.pk))  # everything is there already
    assert GenerationJob.objects.get(pk=queued.pk).status == JobStatus.SUCCEEDED
    assert Candidate.objects.count() == 6  # nothing generated twice


def test_serve_model_serves_a_version_over_http(version, tiny_generator, tiny_adapter_dir):
    greedy = SamplingParams(max_new_tokens=6, temperature=0)
    prompts = [[{"role": "user", "content": "hello"}]]
    with model_server_for(version=version, allow_lora_loading=True).start() as server:
        client = OpenAIGenerator(base_url=server.url, model="tiny")
        assert client.list_models() == ["tiny"]
        assert client.generate(prompts, n=2, params=greedy) == tiny_generator.generate(
            prompts, n=2, params=greedy
        )
        assert client.load_lora_adapter("tiny-v2", str(tiny_adapter_dir)) is True
        assert client.list_models() == ["tiny", "tiny-v2"]
