"""The database itself enforces the invariants (run on SQLite and on PostgreSQL by .ci/run)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from feedback.models import (
    Annotation,
    Demonstration,
    Item,
    Lease,
    PreferencePair,
    Project,
    Prompt,
    Skip,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _annotation(item, user, key="k1"):
    return Annotation.objects.create(
        item=item,
        annotator=user,
        kind=item.project.task_kind,
        payload={"choice": "A"},
        order_shown=[c.pk for c in item.candidates.all()],
        idempotency_key=key,
    )


def test_second_annotation_of_same_item_by_same_annotator_is_rejected(
    project_factory, user_factory, make_item
):
    project = project_factory(annotations_required=3)
    item = make_item(project)
    user = user_factory()
    _annotation(item, user, "a")
    with pytest.raises(IntegrityError), transaction.atomic():
        _annotation(item, user, "b")
    assert Annotation.objects.count() == 1


def test_idempotency_key_unique_per_annotator_only(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=3)
    a, b = make_item(project), make_item(project)
    u1, u2 = user_factory(), user_factory()
    _annotation(a, u1, "same")
    _annotation(a, u2, "same")  # another annotator may reuse the key
    with pytest.raises(IntegrityError), transaction.atomic():
        _annotation(b, u1, "same")


def test_item_cannot_count_more_annotations_than_required(project_factory, make_item):
    item = make_item(project_factory(annotations_required=2))
    Item.objects.filter(pk=item.pk).update(annotations_count=2)
    with pytest.raises(IntegrityError), transaction.atomic():
        Item.objects.filter(pk=item.pk).update(annotations_count=3)


def test_one_lease_per_item_and_annotator(project_factory, user_factory, make_item):
    item = make_item(project_factory(annotations_required=2))
    user = user_factory()
    Lease.objects.create(item=item, annotator=user, expires_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        Lease.objects.create(item=item, annotator=user, expires_at=timezone.now())


def test_one_skip_per_item_and_annotator(project_factory, user_factory, make_item):
    item = make_item(project_factory())
    user = user_factory()
    Skip.objects.create(item=item, annotator=user, reason="unclear")
    with pytest.raises(IntegrityError), transaction.atomic():
        Skip.objects.create(item=item, annotator=user, reason="again")


def test_prompt_hash_unique_per_project(project_factory):
    p1, p2 = project_factory(), project_factory()
    Prompt.objects.create(project=p1, messages=[], text="x", content_hash="h")
    Prompt.objects.create(project=p2, messages=[], text="x", content_hash="h")
    with pytest.raises(IntegrityError), transaction.atomic():
        Prompt.objects.create(project=p1, messages=[], text="x", content_hash="h")


def test_pair_needs_two_different_candidates(project_factory, user_factory, make_item):
    item = make_item(project_factory())
    ann = _annotation(item, user_factory())
    a, b = list(item.candidates.all())
    PreferencePair.objects.create(annotation=ann, prompt=item.prompt, chosen=a, rejected=b)
    with pytest.raises(IntegrityError), transaction.atomic():
        PreferencePair.objects.create(annotation=ann, prompt=item.prompt, chosen=a, rejected=a)


def test_derived_rows_follow_their_annotation(project_factory, user_factory, make_item):
    item = make_item(project_factory())
    ann = _annotation(item, user_factory())
    a, b = list(item.candidates.all())
    PreferencePair.objects.create(annotation=ann, prompt=item.prompt, chosen=a, rejected=b)
    Demonstration.objects.create(annotation=ann, prompt=item.prompt, text="better")
    with pytest.raises(IntegrityError), transaction.atomic():
        Demonstration.objects.create(annotation=ann, prompt=item.prompt, text="second")
    ann.delete()
    assert PreferencePair.objects.count() == 0 and Demonstration.objects.count() == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"task_kind": "pairwise", "responses_per_item": 3},
        {"task_kind": "ranking", "responses_per_item": 1},
        {"task_kind": "binary", "annotations_required": 0},
        {"task_kind": "binary", "gold_rate": 1.5},
    ],
)
def test_project_checks(fields):
    fields.setdefault("responses_per_item", 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Project.objects.create(name="bad", slug="bad", **fields)


def test_gold_item_needs_an_answer(project_factory, make_item):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_item(project_factory(), is_gold=True)
