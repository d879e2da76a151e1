"""Submitting a lease (annotation_submit): the lease becomes an annotation and its derived rows (pairs, binary
labels, a demonstration), in one transaction on SQLite and one statement on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.utils import timezone

from feedback.db import hot_cursor
from feedback.errors import AlreadyAnnotated, Conflict, IdempotencyKeyReused, InvalidInput, NoLiveLease
from feedback.models import Annotation, BinaryLabel, Demonstration, PreferencePair
from feedback.services.distribution.locking import write_block
from feedback.services.distribution.raw import _dt, _field, _from_db, _insert, _is_pg, _json_param, _loads
from feedback.services.distribution.sql import _SUBMIT_READ_SQL_PG, _submit_sql, _submit_write_sql_pg
from feedback.services.distribution.submit_context import _recall_for_submit
from feedback.services.payloads import validate_extras, validate_payload


def _first_result(*, user: AbstractBaseUser, item_id: int, idempotency_key: str) -> Annotation:
    """After a submit found no live lease: the retry's first result, or the reason it cannot be accepted."""
    existing = Annotation.objects.filter(annotator=user, idempotency_key=idempotency_key).first()
    if existing is not None:
        if existing.item_id != item_id:
            raise IdempotencyKeyReused(
                f"idempotency key {idempotency_key!r} was already used for item {existing.item_id}; "
                "use a new key for each annotation",
                details={"item_id": existing.item_id},
            )
        return existing
    if Annotation.objects.filter(annotator=user, item_id=item_id).exists():
        raise AlreadyAnnotated(f"you already annotated item {item_id}")
    raise NoLiveLease(
        f"you hold no live lease on item {item_id}: it expired or was never yours; ask for the next item",
        details={"item_id": item_id},
    )


def annotation_submit(
    *,
    user: AbstractBaseUser,
    item_id: int,
    payload: dict[str, Any],
    idempotency_key: str,
    time_spent_ms: int = 0,
    comment: str = "",
    flags: Iterable[str] = (),
    demonstration: str = "",
) -> tuple[Annotation, bool]:
    """Turn the user's live lease on the item into an annotation and its derived rows, in one transaction.

    Returns (annotation, created). A retry with the same idempotency key returns the first annotation and
    created=False, writing nothing. Raises InvalidInput (400) for a payload that does not fit the task and
    NoLiveLease / AlreadyAnnotated / IdempotencyKeyReused (409) when the state does not allow it.
    """
    if isinstance(item_id, bool) or not isinstance(item_id, int):
        raise InvalidInput("item_id must be an integer", details={"field": "item_id"})
    key, time_spent_ms, comment, flag_list, demonstration = validate_extras(
        idempotency_key=idempotency_key,
        time_spent_ms=time_spent_ms,
        comment=comment,
        flags=flags,
        demonstration=demonstration,
    )
    now = timezone.now()
    extras = {"time_spent_ms": time_spent_ms, "comment": comment, "flags": flag_list, "idempotency_key": key}
    try:
        if _is_pg():
            return _submit_pg(
                user=user, item_id=item_id, payload=payload, extras=extras, demo=demonstration, now=now
            )
        return _submit_sqlite(
            user=user, item_id=item_id, payload=payload, extras=extras, demo=demonstration, now=now
        )
    except IntegrityError:
        # The (annotator, idempotency key) pair may be taken by an annotation of another item: report that.
        if not Annotation.objects.filter(annotator=user, idempotency_key=key).exists():
            raise
        return _first_result(user=user, item_id=item_id, idempotency_key=key), False


def _annotation_rows(
    *,
    item_id: int,
    user: AbstractBaseUser,
    kind: str,
    prompt_id: int,
    judgement: Any,
    order_shown: list[int],
    extras: dict[str, Any],
    demo: str,
    now: datetime,
) -> tuple[dict[str, Any], list[tuple[type[Any], str, list[dict[str, Any]]]]]:
    """The annotation's column values and its derived rows (pairs, binary labels, a demonstration)."""
    values = {
        "item": item_id,
        "annotator": user.pk,
        "kind": kind,
        "payload": judgement.payload,
        "order_shown": order_shown,
        **extras,
        "created_at": now,
    }
    pairs = [
        {
            "prompt": prompt_id,
            "chosen": p.chosen,
            "rejected": p.rejected,
            "is_tie": p.is_tie,
            "margin": p.margin,
            "created_at": now,
        }
        for p in judgement.pairs
    ]
    labels = [
        {"candidate": lb.candidate, "label": lb.label, "reasons": list(lb.reasons), "created_at": now}
        for lb in judgement.labels
    ]
    demos = [{"prompt": prompt_id, "text": demo, "created_at": now}] if demo else []
    return values, [
        (PreferencePair, "annotation", pairs),
        (BinaryLabel, "annotation", labels),
        (Demonstration, "annotation", demos),
    ]


def _built_annotation(annotation_id: int, values: dict[str, Any]) -> Annotation:
    return _from_db(
        Annotation, {"id": annotation_id, **{_field(Annotation, k).attname: v for k, v in values.items()}}
    )


def _item_full(item_id: int) -> Conflict:
    # only when an admin lowered annotations_required below the leases held
    return Conflict(f"item {item_id} already has all the annotations it needs", code="item_full")


def _submit_write_pg(
    values: dict[str, Any],
    children: list[tuple[type[Any], str, list[dict]]],
    *,
    lease: list[Any],
    cursor: Any,
) -> tuple[bool, int | None]:
    """PostgreSQL, one statement in autocommit: take the lease (``lease`` = item id, annotator id, now, and
    what the payload was validated against: the order shown, the task kind, allow_ties), count the annotation
    on the item, INSERT the annotation and its child rows (each pointing at it through `fk`). Returns (the
    lease was taken, the annotation's id or None when the item had no room left). Each value is adapted by
    its field and cast to its column's type; the text is built once per shape (the columns and row counts)."""
    db = connections[DEFAULT_DB_ALIAS]
    shape = tuple((model, fk, tuple(rows[0]) if rows else (), len(rows)) for model, fk, rows in children)
    sql = _submit_write_sql_pg(Annotation, tuple(values), shape)
    params: list[Any] = [*lease]
    params += [_field(Annotation, name).get_db_prep_save(values[name], db) for name in values]
    for model, _fk, rows in children:
        for row in rows:
            params += [_field(model, name).get_db_prep_save(row[name], db) for name in row]
    cursor.execute(sql, params)
    taken, annotation_id = cursor.fetchone()
    return bool(taken), annotation_id


def _submit_pg(
    *,
    user: AbstractBaseUser,
    item_id: int,
    payload: dict[str, Any],
    extras: dict[str, Any],
    demo: str,
    now: datetime,
) -> tuple[Annotation, bool]:
    """PostgreSQL, in autocommit (no BEGIN/COMMIT round trips): read the live lease (what the payload is
    validated against; skipped when this process leased the item, see _SUBMIT_CONTEXT), then take it and write
    everything in one statement (_submit_write_sql_pg), which is atomic on its own."""
    key = extras["idempotency_key"]
    db = connections[DEFAULT_DB_ALIAS]
    context = _recall_for_submit(user.pk, item_id)
    # Inside a caller's transaction, a savepoint: a failed write (a reused idempotency key) must not abort it.
    guard = transaction.atomic() if db.in_atomic_block else nullcontext()
    with guard, hot_cursor() as cursor:
        if context is None:
            cursor.execute(_SUBMIT_READ_SQL_PG, [item_id, user.pk, now])
            row = cursor.fetchone()
            if row is None:
                return _first_result(user=user, item_id=item_id, idempotency_key=key), False
            order_json, prompt_id, kind, allow_ties, has_room = row
            if not has_room:
                raise _item_full(item_id)
            context = ([int(c) for c in _loads(order_json)], prompt_id, kind, bool(allow_ties))
            remembered = False
        else:
            remembered = True
        order_shown, prompt_id, kind, allow_ties = context
        judgement = validate_payload(kind, payload, order_shown, allow_ties=allow_ties)
        values, children = _annotation_rows(
            item_id=item_id,
            user=user,
            kind=kind,
            prompt_id=prompt_id,
            judgement=judgement,
            order_shown=order_shown,
            extras=extras,
            demo=demo,
            now=now,
        )
        taken, annotation_id = _submit_write_pg(
            values,
            children,
            lease=[item_id, user.pk, now, _json_param(order_shown), kind, allow_ties],
            cursor=cursor,
        )
    if not taken:
        if remembered:  # what this process remembered no longer holds (or the lease is gone): read it
            return _submit_pg(user=user, item_id=item_id, payload=payload, extras=extras, demo=demo, now=now)
        # a retry of this submit took the lease first, or it expired meanwhile
        return _first_result(user=user, item_id=item_id, idempotency_key=key), False
    if annotation_id is None:
        raise _item_full(item_id)
    return _built_annotation(annotation_id, values), True


def _submit_sqlite(
    *,
    user: AbstractBaseUser,
    item_id: int,
    payload: dict[str, Any],
    extras: dict[str, Any],
    demo: str,
    now: datetime,
) -> tuple[Annotation, bool]:
    """SQLite, one transaction under the write lock: take the lease, count the annotation, validate, write."""
    delete_sql, update_sql = _submit_sql()
    with write_block() as cursor:  # one cursor for every statement of the submit
        cursor.execute(delete_sql, [item_id, user.pk, _dt(now)])
        row = cursor.fetchone()
        if row is None:
            return _first_result(user=user, item_id=item_id, idempotency_key=extras["idempotency_key"]), False
        order_shown = [int(c) for c in _loads(row[0])]
        cursor.execute(update_sql, [item_id])
        item_row = cursor.fetchone()
        if item_row is None:
            raise _item_full(item_id)
        prompt_id, _project_id, kind, allow_ties = item_row
        judgement = validate_payload(kind, payload, order_shown, allow_ties=bool(allow_ties))
        values, children = _annotation_rows(
            item_id=item_id,
            user=user,
            kind=kind,
            prompt_id=prompt_id,
            judgement=judgement,
            order_shown=order_shown,
            extras=extras,
            demo=demo,
            now=now,
        )
        (annotation_id,) = _insert(Annotation, [values], cursor=cursor)
        for model, fk, rows in children:
            if rows:
                _insert(model, [{fk: annotation_id, **r} for r in rows], cursor=cursor)
    return _built_annotation(annotation_id, values), True
