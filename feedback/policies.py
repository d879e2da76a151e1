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
from enum import StrEnum

from django.contrib.auth.models import AbstractBaseUser
from django.db import DEFAULT_DB_ALIAS, connection, connections

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


def access_project(*, user: AbstractBaseUser, project_id: int, action: Action) -> Membership:
    """The user's membership (with .project loaded) if their role allows the action. One query."""
    if not user.is_authenticated:
        raise Forbidden("log in first", code="not_authenticated")
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
