import pytest

from feedback.management.commands.up import Command
from inference.models import GenerationJob, JobStatus

pytestmark = pytest.mark.django_db


def test_up_requeues_jobs_left_running_by_a_dead_worker(project_factory, django_capture_on_commit_callbacks):
    project = project_factory()
    dead = GenerationJob.objects.create(project=project, status=JobStatus.RUNNING)
    done = GenerationJob.objects.create(project=project, status=JobStatus.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        Command()._recover_jobs()
    dead.refresh_from_db()
    done.refresh_from_db()
    assert dead.status == JobStatus.QUEUED and done.status == JobStatus.SUCCEEDED
    assert len(callbacks) == 1  # one task sent, for the dead job
