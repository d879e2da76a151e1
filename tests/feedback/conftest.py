"""API fixtures: users with tokens in one project at each role, and a client per user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest


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
