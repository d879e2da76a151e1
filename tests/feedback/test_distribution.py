"""next / submit / skip / undo: leases, overlap, ordering, gold, validation, idempotency, expiry and reclaim."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from feedback.errors import (
    AlreadyAnnotated,
    IdempotencyKeyReused,
    InvalidInput,
    NoLiveLease,
    NotFound,
    UndoWindowPassed,
)
from feedback.models import Annotation, BinaryLabel, Demonstration, Item, Lease, PreferencePair, Skip
from feedback.services.distribution import (
    annotation_submit,
    annotation_undo,
    item_next,
    item_skip,
    leases_reclaim,
)

pytestmark = pytest.mark.django_db


def expire(lease: Lease) -> None:
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def submit_first(user, lease, key="k", **kw):
    kind = lease.item.project.task_kind
    payload = {
        "pairwise": {"choice": "A"},
        "ranking": {"ranking": list(lease.order_shown)},
        "binary": {"labels": {str(c): "up" for c in lease.order_shown}},
    }[kind]
    return annotation_submit(user=user, item_id=lease.item_id, payload=payload, idempotency_key=key, **kw)


def test_next_leases_item_with_shown_order_and_candidates(project_factory, user_factory, make_item):
    project = project_factory(task_kind="ranking", responses_per_item=4)
    item = make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    assert lease is not None and lease.item_id == item.pk
    stored = Lease.objects.get(pk=lease.pk)
    assert sorted(stored.order_shown) == sorted(item.candidates.values_list("id", flat=True))
    assert stored.order_shown == lease.order_shown == [c.pk for c in lease.candidates_shown]
    assert lease.item.prompt.text == item.prompt.text
    ttl = (stored.expires_at - stored.created_at).total_seconds()
    assert ttl == pytest.approx(project.lease_ttl_seconds, abs=1)


def test_order_shown_is_randomised(project_factory, user_factory, make_item):
    project = project_factory(task_kind="ranking", responses_per_item=4, annotations_required=40)
    make_item(project)
    orders = {tuple(item_next(project=project, user=user_factory()).order_shown) for _ in range(30)}
    assert len(orders) > 3  # 24 permutations; 30 draws all equal has probability ~1e-40


def test_next_returns_live_lease_first(project_factory, user_factory, make_item):
    project = project_factory()
    make_item(project)
    make_item(project)
    user = user_factory()
    first = item_next(project=project, user=user)
    again = item_next(project=project, user=user)
    assert again.pk == first.pk and again.order_shown == first.order_shown
    assert [c.pk for c in again.candidates_shown] == first.order_shown
    assert Lease.objects.filter(annotator=user).count() == 1


def test_never_the_same_item_twice_and_overlap_respected(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=2)
    items = [make_item(project) for _ in range(3)]
    users = [user_factory() for _ in range(3)]
    seen: dict[int, list[int]] = {u.pk: [] for u in users}
    for _ in range(3):
        for u in users:
            lease = item_next(project=project, user=u)
            if lease is None:
                continue
            assert lease.item_id not in seen[u.pk]
            seen[u.pk].append(lease.item_id)
            submit_first(u, lease, key=f"{u.pk}-{lease.item_id}")
    for item in items:
        item.refresh_from_db()
        assert item.annotations_count == 2 == item.annotations.count()
        assert not item.is_open
    assert all(item_next(project=project, user=u) is None for u in users)


def test_live_leases_count_against_required(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=1)
    make_item(project)
    a, b = user_factory(), user_factory()
    assert item_next(project=project, user=a) is not None
    assert item_next(project=project, user=b) is None  # the one slot is leased


def test_fewest_first_order(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=3)
    done, fresh = make_item(project), make_item(project)
    Item.objects.filter(pk=done.pk).update(annotations_count=1)
    assert item_next(project=project, user=user_factory()).item_id == fresh.pk


def test_priority_order(project_factory, user_factory, make_item):
    project = project_factory(assignment_order="priority")
    low, high = make_item(project, priority=0.1), make_item(project, priority=0.9)
    assert item_next(project=project, user=user_factory()).item_id == high.pk
    assert item_next(project=project, user=user_factory()).item_id == low.pk


def test_random_order_serves_everything(project_factory, user_factory, make_item):
    project = project_factory(assignment_order="random")
    items = {make_item(project).pk for _ in range(6)}
    got = {item_next(project=project, user=user_factory()).item_id for _ in range(6)}
    assert got == items
    assert item_next(project=project, user=user_factory()) is None


def test_gold_served_only_at_gold_rate(project_factory, user_factory, make_item):
    never = project_factory(gold_rate=0.0, annotations_required=5)
    make_item(never, is_gold=True, gold_payload={"choice": "A"})
    normal = make_item(never)
    assert item_next(project=never, user=user_factory()).item_id == normal.pk
    always = project_factory(gold_rate=1.0, annotations_required=5)
    gold = make_item(always, is_gold=True, gold_payload={"choice": "A"})
    make_item(always)
    lease = item_next(project=always, user=user_factory())
    assert lease.item_id == gold.pk and lease.item.is_gold


def test_skipped_item_not_offered_again(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=2)
    item = make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    skip = item_skip(user=user, item_id=lease.item_id, reason="I can't judge code")
    assert Skip.objects.get(pk=skip.pk).reason == "I can't judge code"
    assert not Lease.objects.filter(annotator=user).exists()
    assert item_next(project=project, user=user) is None
    assert item_next(project=project, user=user_factory()).item_id == item.pk  # the slot is free
    assert item_skip(user=user, item_id=item.pk, reason="again").pk == skip.pk  # idempotent
    with pytest.raises(InvalidInput):
        item_skip(user=user, item_id=item.pk, reason="  ")
    with pytest.raises(NoLiveLease):
        item_skip(user=user_factory(), item_id=item.pk, reason="never leased")


def test_lease_expiry_and_reclaim(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=1, lease_ttl_seconds=30)
    item = make_item(project)
    slow, other = user_factory(), user_factory()
    stale = item_next(project=project, user=slow)
    assert item_next(project=project, user=other) is None
    expire(stale)
    taken = item_next(project=project, user=other)  # an expired lease frees its slot
    assert taken is not None and taken.item_id == item.pk
    with pytest.raises(NoLiveLease) as exc:
        submit_first(slow, stale, key="late")
    assert exc.value.code == "no_live_lease" and exc.value.http_status == 409
    _ann, created = submit_first(other, taken, key="on-time")
    assert created and Item.objects.get(pk=item.pk).annotations_count == 1
    assert leases_reclaim() == 1  # the slow annotator's dead lease row
    assert not Lease.objects.exists()


def test_expired_lease_of_same_user_is_renewed(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=1)
    item = make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    expire(lease)
    again = item_next(project=project, user=user)
    assert again.item_id == item.pk and Lease.objects.filter(annotator=user).count() == 1
    assert Lease.objects.get(annotator=user).expires_at > timezone.now()


def test_pairwise_submit_writes_pair_and_closes_item(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=1)
    make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    a, b = lease.order_shown
    ann, created = annotation_submit(
        user=user,
        item_id=lease.item_id,
        payload={"choice": "B", "strength": "clear"},
        idempotency_key="abc",
        time_spent_ms=4200,
        comment=" fine ",
        flags=["pii"],
        demonstration="A better answer.",
    )
    assert created and ann.payload == {"choice": "B", "strength": "clear", "chosen": b}
    assert ann.order_shown == lease.order_shown and ann.time_spent_ms == 4200 and ann.comment == "fine"
    pair = PreferencePair.objects.get(annotation=ann)
    assert (pair.chosen_id, pair.rejected_id, pair.margin, pair.is_tie) == (b, a, 2.0, False)
    assert Demonstration.objects.get(annotation=ann).text == "A better answer."
    item = Item.objects.get(pk=lease.item_id)
    assert item.annotations_count == 1 and not item.is_open
    assert not Lease.objects.exists()


def test_ranking_with_ties_derives_pairs(project_factory, user_factory, make_item):
    project = project_factory(task_kind="ranking", responses_per_item=3, allow_ties=True)
    make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    x, y, z = lease.order_shown
    ann, _ = annotation_submit(
        user=user, item_id=lease.item_id, payload={"ranking": [z, [x, y]]}, idempotency_key="r"
    )
    assert ann.payload == {"ranking": [[z], [x, y]]}
    pairs = {(p.chosen_id, p.rejected_id, p.is_tie) for p in ann.pairs.all()}
    assert pairs == {(z, x, False), (z, y, False), (x, y, True)}


def test_binary_submit_writes_labels(project_factory, user_factory, make_item):
    project = project_factory(task_kind="binary", responses_per_item=2)
    make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    a, b = lease.order_shown
    ann, _ = annotation_submit(
        user=user,
        item_id=lease.item_id,
        payload={"labels": {str(a): "up", b: "down"}, "reasons": {str(b): ["wrong", "rude"]}},
        idempotency_key="bin",
    )
    labels = {lb.candidate_id: (lb.label, lb.reasons) for lb in BinaryLabel.objects.filter(annotation=ann)}
    assert labels == {a: (True, []), b: (False, ["wrong", "rude"])}


@pytest.mark.parametrize(
    ("kind", "k", "ties", "payload", "fragment"),
    [
        ("pairwise", 2, True, {"choice": "C"}, "payload.choice"),
        ("pairwise", 2, False, {"choice": "tie"}, "ties are not allowed"),
        ("pairwise", 2, True, {"choice": "tie", "strength": "clear"}, "strength applies"),
        ("pairwise", 2, True, {"choice": "A", "strength": "huge"}, "payload.strength"),
        ("pairwise", 2, True, ["A"], "JSON object"),
        ("ranking", 3, True, {"ranking": "first"}, "non-empty list"),
        ("ranking", 3, True, {"ranking": ["{0}", "{1}"]}, "leaves out"),
        ("ranking", 3, True, {"ranking": ["{0}", "{0}", "{1}", "{2}"]}, "more than once"),
        ("ranking", 3, True, {"ranking": ["{0}", "{1}", "{2}", 999999]}, "not shown"),
        ("ranking", 3, False, {"ranking": [["{0}", "{1}"], "{2}"]}, "ties are not allowed"),
        ("ranking", 3, True, {"ranking": [True, "{1}", "{2}"]}, "expected a candidate id"),
        ("binary", 2, True, {"labels": {"{0}": "up"}}, "give a thumbs up or down"),
        ("binary", 2, True, {"labels": {"{0}": "up", "{1}": "meh"}}, 'expected "up" or "down"'),
        (
            "binary",
            2,
            True,
            {"labels": {"{0}": "up", "{1}": "up"}, "reasons": {"{0}": ["<script>"]}},
            "a tag",
        ),
    ],
)
def test_invalid_payloads_rejected_and_nothing_lost(
    project_factory, user_factory, make_item, kind, k, ties, payload, fragment
):
    project = project_factory(task_kind=kind, responses_per_item=k, allow_ties=ties)
    make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    ids = [str(c) for c in lease.order_shown]

    def fill(value):
        if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
            return int(value.format(*ids))
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {(k2.format(*ids) if "{" in k2 else k2): fill(v) for k2, v in value.items()}
        return value

    with pytest.raises(InvalidInput) as exc:
        annotation_submit(user=user, item_id=lease.item_id, payload=fill(payload), idempotency_key="x")
    assert fragment in exc.value.message and exc.value.http_status == 400
    # Nothing written, the lease is intact: the annotator can fix it and submit.
    assert not Annotation.objects.exists()
    assert Lease.objects.filter(pk=lease.pk, expires_at__gt=timezone.now()).exists()
    assert Item.objects.get(pk=lease.item_id).annotations_count == 0


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 65}, "idempotency_key"),
        ({"time_spent_ms": -1}, "time_spent_ms"),
        ({"flags": ["spam"]}, "flags"),
        ({"flags": "pii"}, "flags"),
        ({"comment": 5}, "comment"),
    ],
)
def test_invalid_extras(project_factory, user_factory, make_item, extra, field):
    project = project_factory()
    make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    kwargs = {"idempotency_key": "ok", **extra}
    with pytest.raises(InvalidInput) as exc:
        annotation_submit(user=user, item_id=lease.item_id, payload={"choice": "A"}, **kwargs)
    assert exc.value.details["field"] == field


def test_submit_is_idempotent(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=2)
    make_item(project)
    other_item = make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    first, created = annotation_submit(
        user=user, item_id=lease.item_id, payload={"choice": "A"}, idempotency_key="same"
    )
    retry, created_again = annotation_submit(
        user=user, item_id=lease.item_id, payload={"choice": "B"}, idempotency_key="same"
    )
    assert created and not created_again and retry.pk == first.pk and retry.payload["choice"] == "A"
    assert Annotation.objects.count() == 1 and PreferencePair.objects.count() == 1
    assert Item.objects.get(pk=lease.item_id).annotations_count == 1
    # The same key for another item is refused, and the lease on that item survives.
    lease2 = item_next(project=project, user=user)
    assert lease2.item_id == other_item.pk
    with pytest.raises(IdempotencyKeyReused):
        annotation_submit(user=user, item_id=other_item.pk, payload={"choice": "A"}, idempotency_key="same")
    assert Lease.objects.filter(pk=lease2.pk).exists()
    # A new key on an item already annotated says so.
    with pytest.raises(AlreadyAnnotated):
        annotation_submit(user=user, item_id=lease.item_id, payload={"choice": "A"}, idempotency_key="new")


def test_submit_without_lease_is_409(project_factory, user_factory, make_item):
    project = project_factory()
    item = make_item(project)
    with pytest.raises(NoLiveLease) as exc:
        annotation_submit(user=user_factory(), item_id=item.pk, payload={"choice": "A"}, idempotency_key="k")
    assert exc.value.http_status == 409 and "no live lease" in exc.value.message
    assert exc.value.as_dict()["code"] == "no_live_lease"


def test_undo_within_window_frees_and_returns_the_item(project_factory, user_factory, make_item):
    project = project_factory(annotations_required=1, undo_window_seconds=60)
    item = make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    ann, _ = annotation_submit(
        user=user, item_id=item.pk, payload={"choice": "A"}, idempotency_key="u1", demonstration="Better."
    )
    assert not Item.objects.get(pk=item.pk).is_open
    with pytest.raises(NotFound):
        annotation_undo(user=user_factory(), annotation_id=ann.pk)  # not yours: looks absent
    back = annotation_undo(user=user, annotation_id=ann.pk)
    assert not Annotation.objects.exists() and not PreferencePair.objects.exists()
    assert not Demonstration.objects.exists()
    item.refresh_from_db()
    assert item.is_open and item.annotations_count == 0
    assert back.item_id == item.pk and back.order_shown == lease.order_shown
    again = item_next(project=project, user=user)
    assert again.item_id == item.pk and again.order_shown == lease.order_shown
    ann2, created = annotation_submit(
        user=user, item_id=item.pk, payload={"choice": "B"}, idempotency_key="u1"
    )
    assert created and ann2.payload["choice"] == "B"


def test_undo_after_window_refused(project_factory, user_factory, make_item):
    project = project_factory(undo_window_seconds=5)
    make_item(project)
    user = user_factory()
    lease = item_next(project=project, user=user)
    ann, _ = submit_first(user, lease)
    Annotation.objects.filter(pk=ann.pk).update(created_at=timezone.now() - timedelta(seconds=6))
    with pytest.raises(UndoWindowPassed):
        annotation_undo(user=user, annotation_id=ann.pk)
    assert Annotation.objects.filter(pk=ann.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_statements_per_call(project_factory, user_factory, make_item):
    """next and submit stay within their statement budget (BEGIN counted on SQLite)."""
    project = project_factory(annotations_required=2)
    for _ in range(3):
        make_item(project)
    user = user_factory()
    with CaptureQueriesContext(connection) as q_next:
        lease = item_next(project=project, user=user)
    with CaptureQueriesContext(connection) as q_submit:
        submit_first(user, lease)

    def statements(ctx):
        return [q["sql"] for q in ctx.captured_queries if q["sql"] not in ("COMMIT", "BEGIN")]

    assert len(statements(q_next)) <= 4, statements(q_next)
    assert len(statements(q_submit)) <= 5, statements(q_submit)


def test_lowered_requirement_refuses_the_extra_submit(project_factory, user_factory, make_item):
    from feedback.errors import Conflict
    from feedback.services.project_admin import project_update

    project = project_factory(annotations_required=2)
    item = make_item(project)
    a, b = user_factory(), user_factory()
    la, lb = item_next(project=project, user=a), item_next(project=project, user=b)
    project_update(project=project, annotations_required=1)
    submit_first(a, la, key="a")
    with pytest.raises(Conflict) as exc:
        submit_first(b, lb, key="b")
    assert exc.value.code == "item_full" and exc.value.http_status == 409
    item.refresh_from_db()
    assert item.annotations_count == 1 and not item.is_open and item.annotations.count() == 1


@pytest.mark.parametrize(
    "model, values",
    [
        (
            Annotation,
            {"item": 3, "annotator": 4, "kind": "pairwise", "payload": {"choice": "A"}, "order_shown": [1, 2],
             "time_spent_ms": 5, "comment": "", "flags": [], "idempotency_key": "k"},
        ),
        (PreferencePair, {"annotation": 5, "prompt": 1, "chosen": 2, "rejected": 3, "is_tie": False, "margin": 1.0}),
        (BinaryLabel, {"annotation": 5, "candidate": 1, "label": True, "reasons": ["terse"]}),
        (Demonstration, {"annotation": 5, "prompt": 1, "text": "Better."}),
    ],
)  # fmt: skip
def test_insert_adapts_values_as_the_orm_does(model, values):
    """The hot path's INSERT adapts each value as field.get_db_prep_save would (same value, same type)."""
    from feedback.services.distribution.raw import _prep_for

    for name, value in {**values, "created_at": timezone.now()}.items():
        field = model._meta.get_field(name)
        ours = _prep_for(field, connection.vendor)(value, connection)
        theirs = field.get_db_prep_save(value, connection)
        assert type(ours) is type(theirs), name
        assert ours == theirs or str(ours) == str(theirs), (
            name
        )  # psycopg's Jsonb wrappers compare by identity


@pytest.mark.parametrize(
    "model, values",
    [
        (Lease, {"id": 7, "item_id": 3, "annotator_id": 4, "order_shown": [2, 1]}),
        (Item, {"id": 3, "project_id": 1, "prompt_id": 2, "annotations_count": 1, "is_gold": False, "priority": 0.5}),
        (Annotation, {"id": 9, "item_id": 3, "annotator_id": 4, "payload": {"choice": "A"}, "comment": ""}),
    ],
)  # fmt: skip
def test_from_db_builds_what_the_orm_builds(model, values):
    """The hot path's instances equal Model.from_db's: same values, same deferred fields, loaded (not adding)
    from the default database; a deferred field still loads on access."""
    from django.db.models import signals

    from feedback.services.distribution.raw import _from_db

    now = timezone.now()
    values = {
        **values,
        **({"created_at": now} if "created_at" in {f.attname for f in model._meta.fields} else {}),
    }
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    theirs = model.from_db("default", names, [values[n] for n in names])
    ours = _from_db(model, values)
    assert type(ours) is model
    assert {k: v for k, v in vars(ours).items() if k != "_state"} == {
        k: v for k, v in vars(theirs).items() if k != "_state"
    }
    assert ours.get_deferred_fields() == theirs.get_deferred_fields() and ours.get_deferred_fields()
    assert (
        (ours._state.adding, ours._state.db) == (theirs._state.adding, theirs._state.db) == (False, "default")
    )
    assert ours.pk == values["id"]
    # _from_db skips __init__, which is only sound while nothing listens to it
    assert not signals.pre_init.has_listeners(model) and not signals.post_init.has_listeners(model)


@pytest.mark.django_db
def test_from_db_instance_loads_a_deferred_field(project_factory, make_item):
    from feedback.services.distribution.raw import _from_db

    item = make_item(project_factory())
    ours = _from_db(Item, {"id": item.pk, "project_id": item.project_id})
    assert ours.annotations_required == item.annotations_required  # deferred: one query
    assert ours.prompt_id == item.prompt_id


def test_dt_writes_what_the_backend_writes():
    from datetime import UTC
    from zoneinfo import ZoneInfo

    from feedback.services.distribution.raw import _dt

    now = timezone.now()
    for value in (now, now.astimezone(ZoneInfo("Europe/Paris")), now.replace(tzinfo=UTC)):
        if connection.vendor == "postgresql":
            assert _dt(value) is value  # psycopg adapts timestamptz itself
        else:
            assert _dt(value) == connection.ops.adapt_datetimefield_value(value)


def test_from_db_related_cache_serves_forward_relations():
    """_from_db's ``related`` is what assigning the relation caches: no query to read it back."""
    from django.test.utils import CaptureQueriesContext

    from feedback.models import Project
    from feedback.services.distribution.raw import _from_db

    project = Project(pk=5, name="p")
    theirs = Item(id=1, project_id=5, prompt_id=2)
    theirs.project = project
    ours = _from_db(Item, {"id": 1, "project_id": 5, "prompt_id": 2}, related={"project": project})
    assert ours._state.fields_cache == theirs._state.fields_cache
    with CaptureQueriesContext(connection) as queries:
        assert ours.project is project
    assert not queries.captured_queries
