from datetime import timedelta

import pytest
from django.utils import timezone

from feedback.models import Lease, Membership
from feedback.tasks import annotators_flag_all, leases_reclaim_expired

pytestmark = pytest.mark.django_db


def test_expired_leases_are_reclaimed_live_ones_kept(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=2)
    a, b = make_item(project), make_item(project)
    user = user_factory()
    now = timezone.now()
    Lease.objects.create(item=a, annotator=user, expires_at=now - timedelta(seconds=1))
    live = Lease.objects.create(item=b, annotator=user, expires_at=now + timedelta(minutes=5))
    assert leases_reclaim_expired.delay().get() == 1
    assert list(Lease.objects.all()) == [live]


def test_flag_task_runs_projects_with_a_threshold(project_factory, user_factory):
    from django.conf import settings

    project = project_factory(min_agreement=0.5)
    Membership.objects.create(project=project, user=user_factory())
    assert annotators_flag_all.delay().get() == 0  # no evidence yet: nobody changes
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"feedback.tasks.leases_reclaim_expired", "feedback.tasks.annotators_flag_all"} <= tasks
