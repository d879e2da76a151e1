"""The per-process membership cache of the annotate path (feedback.policies): a hit costs no statement, the
services that change memberships or settings forget at once, other changes are seen after the TTL, and the
privileged actions always read the database."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from feedback import policies
from feedback.errors import Forbidden, NotFound
from feedback.models import Membership, Role
from feedback.policies import Action, access_project
from feedback.services.project_admin import project_update
from feedback.services.projects import membership_set

pytestmark = pytest.mark.django_db


def _statements(fn) -> int:
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return len(ctx.captured_queries)


def test_annotate_is_answered_from_the_cache_privileged_actions_are_not(crew):
    def annotate():
        return access_project(user=crew.admin, project_id=crew.project.pk, action=Action.ANNOTATE)

    assert _statements(annotate) == 1
    assert _statements(annotate) == 0
    assert annotate() is annotate()  # the same read-only objects within the TTL
    for action in (Action.REVIEW, Action.MANAGE, Action.EXPORT):
        assert (
            _statements(
                lambda a=action: access_project(user=crew.admin, project_id=crew.project.pk, action=a)
            )
            == 1
        )


def test_services_forget_at_once(crew):
    project_id = crew.project.pk
    first = access_project(user=crew.annotator, project_id=project_id, action=Action.ANNOTATE)
    assert first.project.lease_ttl_seconds != 77
    project_update(project=crew.project, lease_ttl_seconds=77)
    again = access_project(user=crew.annotator, project_id=project_id, action=Action.ANNOTATE)
    assert again.project.lease_ttl_seconds == 77

    membership_set(project=crew.project, user=crew.annotator, role=Role.REVIEWER)
    assert (
        access_project(user=crew.annotator, project_id=project_id, action=Action.ANNOTATE).role == "reviewer"
    )


def test_changes_made_elsewhere_are_seen_after_the_ttl(crew, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(policies.time, "monotonic", lambda: clock[0])
    project_id = crew.project.pk

    def annotate():
        return access_project(user=crew.annotator, project_id=project_id, action=Action.ANNOTATE)

    with override_settings(API_MEMBERSHIP_CACHE_SECONDS=5):
        annotate()
        # another process (or the Django admin) removes the membership: no forget here
        Membership.objects.filter(project=crew.project, user=crew.annotator).delete()
        clock[0] += 4.9
        assert annotate().user_id == crew.annotator.pk  # still cached
        clock[0] += 0.2
        with pytest.raises(NotFound):
            annotate()
        # removed members are never cached: the refusal is immediate and repeatable
        with pytest.raises(NotFound):
            annotate()


def test_zero_ttl_turns_it_off(crew):
    with override_settings(API_MEMBERSHIP_CACHE_SECONDS=0):
        call = lambda: access_project(user=crew.annotator, project_id=crew.project.pk, action=Action.ANNOTATE)  # noqa: E731
        assert _statements(call) == 1
        assert _statements(call) == 1


def test_a_cached_annotator_still_may_not_review(crew):
    access_project(user=crew.annotator, project_id=crew.project.pk, action=Action.ANNOTATE)
    with pytest.raises(Forbidden):
        access_project(user=crew.annotator, project_id=crew.project.pk, action=Action.REVIEW)
