"""Who may do what. `access_*` functions fetch what is asked for and check permission in one step; they raise
NotFound (a project or annotation the user cannot see) or Forbidden (seen, but not at this role).

Roles are per project (Membership.role); a Django superuser acts as admin of every project, and staff users
may create projects.

| action     | annotator | reviewer | admin | what it covers                                              |
|------------|-----------|----------|-------|-------------------------------------------------------------|
| view       | yes       | yes      | yes   | the project's settings and guidelines                       |
| annotate   | yes       | yes      | yes   | next, submit, skip, undo, one's own annotations             |
| review     | -         | yes      | yes   | everyone's labels, stats, agreement, position bias, leaderboard |
| manage     | -         | -        | yes   | settings, members, imports, gold answers, flagging          |
| export     | -         | -        | yes   | dataset snapshots and exports                               |
"""

from __future__ import annotations

import functools
import threading
import time
from enum import StrEnum

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction

from feedback.db import hot_cursor
from feedback.errors import Forbidden, NotFound
from feedback.models import Annotation, Membership, Project, Role


class Action(StrEnum):
    VIEW = "view"
    ANNOTATE = "annotate"
    REVIEW = "review"
    MANAGE = "manage"
    EXPORT = "export"


ALLOWED: dict[Action, frozenset[str]] = {
    Action.VIEW: frozenset({Role.ANNOTATOR, Role.REVIEWER, Role.ADMIN}),
    Action.ANNOTATE: frozenset({Role.ANNOTATOR, Role.REVIEWER, Role.ADMIN}),
    Action.REVIEW: frozenset({Role.REVIEWER, Role.ADMIN}),
    Action.MANAGE: frozenset({Role.ADMIN}),
    Action.EXPORT: frozenset({Role.ADMIN}),
}


def can(role: str, action: Action) -> bool:
    return role in ALLOWED[action]


def _superuser_membership(user: AbstractBaseUser, project: Project) -> Membership:
    return Membership(project=project, user=user, role=Role.ADMIN)


@functools.lru_cache(maxsize=2)
def _membership_sql(vendor: str) -> str:
    columns = ", ".join(f"p.{connection.ops.quote_name(f.column)}" for f in Project._meta.concrete_fields)
    return (
        f"SELECT {columns}, m.id, m.role, m.flagged"
        f" FROM {Project._meta.db_table} p JOIN {Membership._meta.db_table} m ON m.project_id = p.id"
        " WHERE p.id = %s AND m.user_id = %s"
    )


def _membership_with_project(*, user_id: int, project_id: int) -> Membership | None:
    """Membership and project in one statement, without the ORM's query compiler (this runs on every
    next/submit-side request; see DESIGN.md on per-request cost). Column values go through each field's and
    the backend's converters, as the ORM would (JSON, booleans and datetimes on SQLite)."""
    db = connections[DEFAULT_DB_ALIAS]
    with hot_cursor() as cursor:
        cursor.execute(_membership_sql(db.vendor), [project_id, user_id])
        row = cursor.fetchone()
    if row is None:
        return None
    fields = Project._meta.concrete_fields
    values = []
    for field, value in zip(fields, row, strict=False):
        col = field.get_col(Project._meta.db_table)
        for convert in col.get_db_converters(db):
            value = convert(value, col, db)
        values.append(value)
    project = Project.from_db(DEFAULT_DB_ALIAS, [f.attname for f in fields], values)
    membership_id, role, flagged = row[len(fields) :]
    membership = Membership(
        id=membership_id, project=project, user_id=user_id, role=role, flagged=bool(flagged)
    )
    membership._state.adding = False
    return membership


# Memberships looked up for Action.ANNOTATE (every next: the hot path), kept per process for
# API_MEMBERSHIP_CACHE_SECONDS. Every role may annotate, so a cached answer can only be stale in two ways: a
# membership removed, or project settings changed (lease TTL, gold rate, order) in another process, both seen
# at the latest that long afterwards; this process forgets at once (membership_forget, called by the
# services that write them). Privileged actions (review, manage, export) always read the database.
_CACHED_ACTIONS = frozenset({Action.ANNOTATE})
_membership_lock = threading.Lock()
_memberships: dict[tuple[int, int], tuple[float, Membership]] = {}
MEMBERSHIP_CACHE_MAX = 10_000


def _forget(project_id: int | None) -> None:
    with _membership_lock:
        if project_id is None:
            _memberships.clear()
        else:
            for key in [k for k in _memberships if k[1] == project_id]:
                del _memberships[key]


def membership_forget(*, project_id: int | None = None) -> None:
    """Drop this process's cached memberships of one project (or of all): now, and again when the caller's
    transaction commits, so that no request caches the old rows in between."""
    _forget(project_id)
    transaction.on_commit(lambda: _forget(project_id))


def _membership_cached(*, user_id: int, project_id: int) -> Membership | None:
    """_membership_with_project through the per-process cache (read-only: the same objects are handed to
    every request within the TTL). Absent memberships are not cached."""
    ttl = float(getattr(settings, "API_MEMBERSHIP_CACHE_SECONDS", 5))
    if ttl <= 0:
        return _membership_with_project(user_id=user_id, project_id=project_id)
    now = time.monotonic()
    hit = _memberships.get((user_id, project_id))
    if hit is not None and hit[0] > now:
        return hit[1]
    membership = _membership_with_project(user_id=user_id, project_id=project_id)
    if membership is not None:
        with _membership_lock:
            if len(_memberships) >= MEMBERSHIP_CACHE_MAX:
                _memberships.clear()
            _memberships[(user_id, project_id)] = (now + ttl, membership)
    return membership


def access_project(*, user: AbstractBaseUser, project_id: int, action: Action) -> Membership:
    """The user's membership (with .project loaded) if their role allows the action. One query (none for
    Action.ANNOTATE while this process's cached answer is fresh: see _membership_cached). Treat the returned
    objects as read-only."""
    if not user.is_authenticated:
        raise Forbidden("log in first", code="not_authenticated")
    if action in _CACHED_ACTIONS:
        membership = _membership_cached(user_id=user.pk, project_id=project_id)
    else:
        membership = _membership_with_project(user_id=user.pk, project_id=project_id)
    if membership is None:
        if getattr(user, "is_superuser", False):
            project = Project.objects.filter(pk=project_id).first()
            if project is not None:
                return _superuser_membership(user, project)
        raise NotFound(f"no project {project_id} among yours", code="project_not_found")
    if not can(membership.role, action) and not getattr(user, "is_superuser", False):
        raise Forbidden(
            f"your role in this project ({membership.role}) may not {action.value}",
            code="role_forbidden",
            details={"role": membership.role, "action": action.value},
        )
    return membership


def access_project_create(*, user: AbstractBaseUser) -> None:
    if not (getattr(user, "is_staff", False) or getattr(user, "is_superuser", False)):
        raise Forbidden("only staff may create projects", code="role_forbidden")


def access_annotation(*, user: AbstractBaseUser, annotation_id: int) -> Annotation:
    """One's own annotation, or anyone's for a reviewer or admin of its project. Others look absent (404)."""
    annotation = (
        Annotation.objects.select_related("item__project", "annotator").filter(pk=annotation_id).first()
    )
    if annotation is not None:
        if annotation.annotator_id == user.pk or getattr(user, "is_superuser", False):
            return annotation
        role = (
            Membership.objects.filter(project_id=annotation.item.project_id, user_id=user.pk)
            .values_list("role", flat=True)
            .first()
        )
        if role is not None and can(role, Action.REVIEW):
            return annotation
    raise NotFound(f"no annotation {annotation_id} among those you may read", code="annotation_not_found")
