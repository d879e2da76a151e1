"""The permission matrix: every role against every endpoint of the annotation API, including an annotator
reading another annotator's labels, a project they are not in, and an export."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver

from feedback.models import Annotation, DatasetSnapshot, Item
from feedback.services.distribution import annotation_submit, item_next

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "outsider", "annotator", "reviewer", "admin")


@dataclass(frozen=True)
class Endpoint:
    method: str
    url: Callable[[Any, Any], str]  # (crew, ctx) -> url
    expect: tuple[int, int, int, int, int]  # in the order of ROLES
    body: Callable[[Any, Any], Any] | None = None
    needs_lease: bool = False


def _pid(crew, ctx):
    return crew.project.pk


ENDPOINTS: dict[str, Endpoint] = {
    "projects list": Endpoint("get", lambda c, x: "/api/v1/projects/", (401, 200, 200, 200, 200)),
    "project create": Endpoint(
        "post",
        lambda c, x: "/api/v1/projects/create/",
        (401, 403, 403, 403, 403),  # staff only (tested in test_api); project admins are not staff
        lambda c, x: {"name": "New", "task_kind": "pairwise"},
    ),
    "project detail": Endpoint(
        "get", lambda c, x: f"/api/v1/projects/{_pid(c, x)}/", (401, 404, 200, 200, 200)
    ),
    "project update": Endpoint(
        "post",
        lambda c, x: f"/api/v1/projects/{_pid(c, x)}/update/",
        (401, 404, 403, 403, 200),
        lambda c, x: {"guidelines": "Be kind."},
    ),
    "members set": Endpoint(
        "post",
        lambda c, x: f"/api/v1/projects/{_pid(c, x)}/members/set/",
        (401, 404, 403, 403, 200),
        lambda c, x: {"username": "outsider", "role": "annotator"},
    ),
    "prompts import": Endpoint(
        "post",
        lambda c, x: f"/api/v1/projects/{_pid(c, x)}/prompts/import/",
        (401, 404, 403, 403, 201),
        lambda c, x: {"rows": [{"prompt": "A new prompt?"}]},
    ),
    "candidates import": Endpoint(
        "post",
        lambda c, x: f"/api/v1/projects/{_pid(c, x)}/candidates/import/",
        (401, 404, 403, 403, 201),
        lambda c, x: {"rows": [{"prompt": "Q?", "response": "A.", "model": "m"}]},
    ),
    "next": Endpoint("post", lambda c, x: f"/api/v1/projects/{_pid(c, x)}/next/", (401, 404, 200, 200, 200)),
    "submit": Endpoint(
        "post",
        lambda c, x: f"/api/v1/items/{x['item_id']}/submit/",
        (401, 409, 201, 201, 201),  # the live lease is the permission: an outsider never gets one
        lambda c, x: {"payload": {"choice": "A"}, "idempotency_key": "perm"},
        needs_lease=True,
    ),
    "skip": Endpoint(
        "post",
        lambda c, x: f"/api/v1/items/{x['item_id']}/skip/",
        (401, 409, 200, 200, 200),
        lambda c, x: {"reason": "unsure"},
        needs_lease=True,
    ),
    "own annotations": Endpoint("get", lambda c, x: "/api/v1/annotations/", (401, 200, 200, 200, 200)),
    "another's annotation": Endpoint(
        "get", lambda c, x: f"/api/v1/annotations/{x['others']}/", (401, 404, 404, 200, 200)
    ),
    "undo another's annotation": Endpoint(
        "post", lambda c, x: f"/api/v1/annotations/{x['others']}/undo/", (401, 404, 404, 404, 404)
    ),
    "project annotations": Endpoint(
        "get", lambda c, x: f"/api/v1/projects/{_pid(c, x)}/annotations/", (401, 404, 403, 200, 200)
    ),
    "another's annotations by filter": Endpoint(
        "get",
        lambda c, x: f"/api/v1/projects/{_pid(c, x)}/annotations/?annotator={c.other_annotator.pk}",
        (401, 404, 403, 200, 200),
    ),
    "stats": Endpoint("get", lambda c, x: f"/api/v1/projects/{_pid(c, x)}/stats/", (401, 404, 403, 200, 200)),
    "agreement": Endpoint(
        "get", lambda c, x: f"/api/v1/projects/{_pid(c, x)}/agreement/", (401, 404, 403, 200, 200)
    ),
    "leaderboard": Endpoint(
        "get",
        lambda c, x: f"/api/v1/projects/{_pid(c, x)}/leaderboard/?bootstrap=5",
        (401, 404, 403, 200, 200),
    ),
    "leaderboard plot": Endpoint(
        "get",
        lambda c, x: f"/api/v1/projects/{_pid(c, x)}/leaderboard.svg?bootstrap=5",
        (401, 404, 403, 200, 200),
    ),
    "quality flag": Endpoint(
        "post", lambda c, x: f"/api/v1/projects/{_pid(c, x)}/quality/flag/", (401, 404, 403, 403, 200)
    ),
    "gold set": Endpoint(
        "post",
        lambda c, x: f"/api/v1/items/{x['gold_item']}/gold/",
        (401, 404, 403, 403, 200),
        lambda c, x: {"gold_payload": {"chosen": x["gold_candidate"]}},
    ),
    "token revoke": Endpoint("post", lambda c, x: "/api/v1/auth/token/revoke/", (401, 204, 204, 204, 204)),
}


def _context(crew) -> dict[str, Any]:
    """Another annotator's label, and an item to make gold."""
    lease = item_next(project=crew.project, user=crew.other_annotator)
    others, _ = annotation_submit(
        user=crew.other_annotator, item_id=lease.item_id, payload={"choice": "B"}, idempotency_key="o"
    )
    gold = Item.objects.filter(project=crew.project).exclude(pk=lease.item_id).first()
    return {
        "others": others.pk,
        "gold_item": gold.pk,
        "gold_candidate": gold.slots.first().candidate_id,
    }


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_permission_matrix(crew, api_for, name):
    """One endpoint against every role; each role's call runs in a transaction rolled back afterwards."""
    endpoint = ENDPOINTS[name]
    ctx = _context(crew)
    got = {}
    for role in ROLES:
        with transaction.atomic():
            user = None if role == "anonymous" else crew.user(role)
            if endpoint.needs_lease:
                lease = (
                    item_next(project=crew.project, user=user)
                    if role not in ("anonymous", "outsider")
                    else None
                )
                ctx["item_id"] = (
                    lease.item_id if lease else Item.objects.filter(project=crew.project).first().pk
                )
            response = getattr(api_for(user), endpoint.method)(
                endpoint.url(crew, ctx), endpoint.body(crew, ctx) if endpoint.body else None, format="json"
            )
            got[role] = response.status_code
            if response.status_code >= 400:
                body = response.json()
                assert set(body) >= {"code", "message"} and body["message"], (role, body)
            transaction.set_rollback(True)
    assert got == dict(zip(ROLES, endpoint.expect, strict=True)), name


def test_annotator_list_shows_only_their_own_labels(crew, api_for):
    ctx = _context(crew)
    client = api_for(crew.annotator)
    lease = item_next(project=crew.project, user=crew.annotator)
    mine, _ = annotation_submit(
        user=crew.annotator, item_id=lease.item_id, payload={"choice": "A"}, idempotency_key="m"
    )
    for url in ("/api/v1/annotations/", f"/api/v1/annotations/?project={crew.project.pk}"):
        ids = [a["id"] for a in client.get(url).json()["results"]]
        assert ids == [mine.pk] and ctx["others"] not in ids
    assert Annotation.objects.filter(pk=ctx["others"]).exists()


def test_next_in_a_project_they_are_not_in(crew, api_for, project_factory, make_item):
    elsewhere = project_factory(name="Elsewhere")
    make_item(elsewhere)
    r = api_for(crew.annotator).post(f"/api/v1/projects/{elsewhere.pk}/next/")
    assert r.status_code == 404 and r.json()["code"] == "project_not_found"


def _export_routes() -> list[tuple[str, Any]]:
    from feedback.exports import urls as export_urls

    routes = []

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                routes.append((prefix + str(p.pattern), p.callback))

    walk(export_urls.urlpatterns)
    return routes


def test_annotator_cannot_export(crew, api_for):
    """Every export API route, every method it serves: an annotator is refused, and a list shows them nothing
    of the project."""
    import re

    routes = _export_routes()
    if not routes:
        pytest.skip("the export API (feedback/exports/urls.py) has no routes yet")
    snapshot = DatasetSnapshot.objects.create(name="s", kind="preference")
    snapshot.projects.add(crew.project)
    tried = 0
    for route, callback in routes:
        url = "/api/v1/" + re.sub(
            r"<(?:\w+:)?(\w+)>",
            lambda m: str(crew.project.pk if "project" in m.group(1) else snapshot.pk),
            route,
        )
        view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
        methods = [
            m for m in ("get", "post", "put", "patch", "delete") if view_class and hasattr(view_class, m)
        ]
        for role in ("annotator", "other_annotator"):  # reviewers may read snapshots (exports' policy)
            client = api_for(crew.user(role))
            for method in methods:
                body = {
                    "project_ids": [crew.project.pk],
                    "kind": "preference",
                    "name": "x",
                    "formats": ["jsonl"],
                }
                response = getattr(client, method)(url, body, format="json")
                tried += 1
                if response.status_code == 200 and method == "get" and "results" in response.json():
                    # a list answers, but shows nothing of a project the caller may not export
                    assert snapshot.pk not in [r["id"] for r in response.json()["results"]], (role, url)
                    continue
                assert response.status_code in (403, 404), (role, method, url, response.status_code)
    assert tried
