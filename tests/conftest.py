"""Shared fixtures. torch runs on one thread in tests (5-20x faster on this machine's 2 cores)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _fresh_membership_cache():
    """Each test starts with empty per-process caches (the memberships of feedback.policies, the submit
    contexts of PostgreSQL's distribution): a rolled-back test's ids come back in the next test, with other
    rows behind them."""
    yield
    from feedback.policies import _forget
    from feedback.services.distribution.submit_context import _SUBMIT_CONTEXT

    _forget(None)
    _SUBMIT_CONTEXT.clear()


@pytest.fixture
def user_factory(db):
    from django.contrib.auth import get_user_model

    User = get_user_model()
    counter = iter(range(1, 10**6))

    def make(username: str | None = None, **fields):
        username = username or f"user{next(counter)}"
        user = User.objects.create_user(username=username, password="pw-" + username, **fields)
        return user

    return make


@pytest.fixture
def project_factory(db):
    from feedback.services.projects import project_create

    counter = iter(range(1, 10**6))

    def make(**fields):
        fields.setdefault("name", f"Project {next(counter)}")
        fields.setdefault("task_kind", "pairwise")
        return project_create(**fields)

    return make


@pytest.fixture
def model_version(db):
    from inference.models import Engine, ModelVersion

    return ModelVersion.objects.create(name="test-model", engine=Engine.EXTERNAL)


@pytest.fixture
def make_item(db, model_version):
    """An item of the project with k fresh candidates (one prompt each call)."""
    from feedback import pii
    from feedback.models import Candidate, Item, ItemCandidate, Prompt

    counter = iter(range(1, 10**6))

    def make(project, *, texts: list[str] | None = None, version=None, **fields):
        n = next(counter)
        messages = [{"role": "user", "content": f"Prompt number {n}?"}]
        prompt = Prompt.objects.create(
            project=project,
            messages=messages,
            text=messages[0]["content"],
            content_hash=pii.messages_hash(messages),
        )
        texts = texts or [f"Answer {i} to prompt {n}" for i in range(project.responses_per_item)]
        item = Item.objects.create(
            project=project, prompt=prompt, annotations_required=project.annotations_required, **fields
        )
        for pos, text in enumerate(texts):
            c = Candidate.objects.create(
                prompt=prompt,
                model_version=version or model_version,
                text=text,
                text_hash=pii.text_hash(text),
            )
            ItemCandidate.objects.create(item=item, candidate=c, position=pos)
        return item

    return make


# -- API fixtures: users with tokens in one project at each role, and a client per user -------------
@dataclass
class Crew:
    project: Any
    annotator: Any
    other_annotator: Any
    reviewer: Any
    admin: Any
    outsider: Any
    staff: Any

    def user(self, role: str) -> Any:
        return getattr(self, role)


@pytest.fixture
def crew(db, user_factory, project_factory, make_item):
    from feedback.services.projects import membership_set

    project = project_factory(name="Crew project", annotations_required=2)
    users = {
        name: user_factory(name) for name in ("annotator", "other_annotator", "reviewer", "admin", "outsider")
    }
    staff = user_factory("staff", is_staff=True)
    for name, role in (
        ("annotator", "annotator"),
        ("other_annotator", "annotator"),
        ("reviewer", "reviewer"),
        ("admin", "admin"),
    ):
        membership_set(project=project, user=users[name], role=role)
    for _ in range(4):
        make_item(project)
    return Crew(project=project, staff=staff, **users)


@pytest.fixture
def api_for():
    """An APIClient authenticated by the user's token (or anonymous for None)."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make
