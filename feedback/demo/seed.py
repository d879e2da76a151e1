"""Demo data: three projects (ranking, pairwise, thumbs), an admin, two annotators, and generation
jobs that fill them with candidates from the real demo model in the background."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from feedback.models import Project, Role, TaskKind
from feedback.services.imports import prompts_import_file
from feedback.services.projects import membership_set, project_create

PROMPTS_FILE = Path(__file__).with_name("prompts.jsonl")

DEMO_USERS = [
    # (username, password, role, is_staff)
    ("admin", "arbiter-admin", Role.ADMIN, True),
    ("alice", "arbiter-alice", Role.ANNOTATOR, False),
    ("bob", "arbiter-bob", Role.ANNOTATOR, False),
]

GUIDELINES = """\
## How to judge

* Prefer the response that **answers the question** correctly and completely.
* Then prefer the **clearer and shorter** one; padding is not helpful.
* Mark anything harmful, containing personal data, or broken with the flags.
* If you can write a better answer, please do: it becomes training data.

Keys: `1`–`4` choose, `Enter` submits, `s` skips, `u` undoes, `?` shows these guidelines.
"""

DEMO_PROJECTS = [
    ("Demo: pairwise", TaskKind.PAIRWISE, 2),
    ("Demo: ranking", TaskKind.RANKING, 4),
    ("Demo: thumbs", TaskKind.BINARY, 2),
]


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    role: str


def demo_seed(*, model_path: str | None, max_new_tokens: int = 160) -> list[DemoLogin]:
    """Create (or find) the demo users and projects; queue generation for prompts without candidates."""
    from inference.engines.base import SamplingParams
    from inference.models import ModelVersion
    from inference.services import generation_job_create, model_version_register

    User = get_user_model()
    logins = []
    with transaction.atomic():
        users = {}
        for username, password, role, staff in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": staff, "is_superuser": staff}
            )
            if created:
                user.set_password(password)
                user.save()
            users[username] = (user, role)
            logins.append(DemoLogin(username, password, role))
        version = None
        if model_path:
            version = model_version_register(
                name="smollm2-135m-instruct", base_model=model_path, is_demo=True
            )
        projects = []
        for name, kind, k in DEMO_PROJECTS:
            project = Project.objects.filter(name=name).first()
            if project is None:
                project = project_create(
                    name=name,
                    task_kind=kind,
                    responses_per_item=k,
                    guidelines=GUIDELINES,
                    annotations_required=2,
                )
                prompts_import_file(project=project, path=PROMPTS_FILE)
            for user, role in users.values():
                membership_set(project=project, user=user, role=role)
            projects.append(project)
    if version is not None:
        versions = [version]
        for project in projects:
            if project.generation_jobs.filter(status__in=["queued", "running"]).exists():
                continue
            if not project.prompts.exclude(candidates__model_version=version).exists():
                continue
            generation_job_create(
                project=project,
                model_versions=versions,
                n=project.responses_per_item,
                sampling_params=SamplingParams(max_new_tokens=max_new_tokens, temperature=0.9),
                chunk_size=8,
            )
    assert ModelVersion.objects.exists() or not model_path
    return logins
