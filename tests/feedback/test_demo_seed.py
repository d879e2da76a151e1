import pytest
from django.contrib.auth import get_user_model

from feedback.demo.seed import DEMO_PROJECTS, demo_seed
from feedback.models import Membership, Project, Prompt

pytestmark = pytest.mark.django_db


def test_demo_seed_is_idempotent_and_logins_work():
    logins = demo_seed(model_path=None)
    again = demo_seed(model_path=None)
    assert logins == again
    assert Project.objects.count() == len(DEMO_PROJECTS)
    assert {p.task_kind for p in Project.objects.all()} == {"ranking", "pairwise", "binary"}
    n_prompts = Prompt.objects.filter(project__name="Demo: pairwise").count()
    assert 45 <= n_prompts <= 60
    User = get_user_model()
    for login in logins:
        assert User.objects.get(username=login.username).check_password(login.password)
    assert Membership.objects.filter(user__username="alice", role="annotator").count() == 3
    assert Membership.objects.filter(user__username="admin", role="admin").count() == 3


def test_demo_seed_queues_generation_with_a_model(tmp_path, django_capture_on_commit_callbacks):
    from inference.models import GenerationJob, ModelVersion

    with django_capture_on_commit_callbacks(execute=False):
        demo_seed(model_path=str(tmp_path))
    version = ModelVersion.objects.get(is_demo=True)
    assert version.base_model == str(tmp_path)
    jobs = GenerationJob.objects.all()
    assert jobs.count() == 3
    assert all(list(j.model_versions.all()) == [version] for j in jobs)
