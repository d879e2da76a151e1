"""The REST API end to end: token, next → submit → retry → undo, skip, imports, quality, errors, throttling,
pagination, schema and docs."""

from __future__ import annotations

import io
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from feedback.models import Annotation, Item, Lease, PreferencePair, Prompt, Skip

pytestmark = pytest.mark.django_db


def test_token_obtain_and_revoke(crew, api_for):
    anon = api_for()
    r = anon.post("/api/v1/auth/token/", {"username": "annotator", "password": "pw-annotator"}, format="json")
    assert r.status_code == 200 and len(r.json()["token"]) == 40
    bad = anon.post("/api/v1/auth/token/", {"username": "annotator", "password": "nope"}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    client = api_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {r.json()['token']}")
    assert client.get("/api/v1/projects/").status_code == 200
    assert client.post("/api/v1/auth/token/revoke/").status_code == 204
    denied = client.get("/api/v1/projects/")
    assert denied.status_code == 401 and denied.json()["code"] == "authentication_failed"


def test_session_auth_works_and_needs_csrf(crew):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(crew.annotator)
    assert browser.get("/api/v1/projects/").status_code == 200
    r = browser.post(f"/api/v1/projects/{crew.project.pk}/next/")
    assert r.status_code == 403 and "CSRF" in r.json()["message"]


def test_next_submit_retry_undo_flow(crew, api_for):
    client = api_for(crew.annotator)
    r = client.post(f"/api/v1/projects/{crew.project.pk}/next/")
    assert r.status_code == 200
    lease = r.json()
    assert lease["kind"] == "pairwise" and len(lease["candidates"]) == 2
    assert [c["id"] for c in lease["candidates"]] == Lease.objects.get(pk=lease["lease_id"]).order_shown
    assert "is_gold" not in lease and "model_version" not in str(lease)
    again = client.post(f"/api/v1/projects/{crew.project.pk}/next/").json()
    assert again["lease_id"] == lease["lease_id"]

    body = {"payload": {"choice": "A", "strength": "clear"}, "time_spent_ms": 3100, "flags": ["broken"]}
    url = f"/api/v1/items/{lease['item_id']}/submit/"
    first = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert first.status_code == 201, first.json()
    ann = first.json()
    assert ann["payload"]["chosen"] == lease["candidates"][0]["id"]
    assert ann["order_shown"] == [c["id"] for c in lease["candidates"]]
    retry = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert retry.status_code == 200 and retry.json()["id"] == ann["id"]
    assert Annotation.objects.count() == 1 and PreferencePair.objects.count() == 1

    late = client.post(url, {**body, "idempotency_key": "key-2"}, format="json")
    assert late.status_code == 409 and late.json()["code"] == "already_annotated"

    mine = client.get("/api/v1/annotations/").json()
    assert mine["count"] == 1 and mine["results"][0]["id"] == ann["id"]
    assert client.get(f"/api/v1/annotations/{ann['id']}/").json()["project_id"] == crew.project.pk

    undo = client.post(f"/api/v1/annotations/{ann['id']}/undo/")
    assert undo.status_code == 200 and undo.json()["item_id"] == lease["item_id"]
    assert not Annotation.objects.exists() and not PreferencePair.objects.exists()
    back = client.post(f"/api/v1/projects/{crew.project.pk}/next/").json()
    assert back["item_id"] == lease["item_id"]
    assert [c["id"] for c in back["candidates"]] == [c["id"] for c in lease["candidates"]]


def test_submit_errors_have_code_and_message(crew, api_for):
    client = api_for(crew.annotator)
    item = Item.objects.filter(project=crew.project).first()
    no_lease = client.post(
        f"/api/v1/items/{item.pk}/submit/",
        {"payload": {"choice": "A"}, "idempotency_key": "k"},
        format="json",
    )
    assert no_lease.status_code == 409
    assert no_lease.json()["code"] == "no_live_lease" and "no live lease" in no_lease.json()["message"]
    lease = client.post(f"/api/v1/projects/{crew.project.pk}/next/").json()
    url = f"/api/v1/items/{lease['item_id']}/submit/"
    missing_key = client.post(url, {"payload": {"choice": "A"}}, format="json")
    assert missing_key.status_code == 400 and missing_key.json()["details"]["field"] == "idempotency_key"
    bad_choice = client.post(url, {"payload": {"choice": "Z"}, "idempotency_key": "k"}, format="json")
    assert bad_choice.status_code == 400
    assert bad_choice.json() == {
        "code": "invalid",
        "message": "payload.choice must be one of A, B, tie, both_bad, got 'Z'",
        "details": {"field": "choice"},
    }
    bad_flag = client.post(
        url, {"payload": {"choice": "A"}, "idempotency_key": "k", "flags": ["x"]}, format="json"
    )
    assert bad_flag.status_code == 400 and bad_flag.json()["message"].startswith("flags.")
    not_json = client.post(url, "{not json", content_type="application/json")
    assert not_json.status_code == 400 and not_json.json()["code"] == "parse_error"
    assert client.get(url).status_code == 405 and client.get(url).json()["code"] == "method_not_allowed"
    assert Lease.objects.filter(pk=lease["lease_id"]).exists()  # nothing lost on the way


def test_next_returns_204_when_nothing_left(crew, api_for, make_item):
    client = api_for(crew.annotator)
    Item.objects.filter(project=crew.project).update(is_open=False)
    assert client.post(f"/api/v1/projects/{crew.project.pk}/next/").status_code == 204


def test_skip(crew, api_for):
    client = api_for(crew.annotator)
    lease = client.post(f"/api/v1/projects/{crew.project.pk}/next/").json()
    r = client.post(f"/api/v1/items/{lease['item_id']}/skip/", {"reason": "not my language"}, format="json")
    assert r.status_code == 200 and Skip.objects.get().reason == "not my language"
    assert client.post(f"/api/v1/items/{lease['item_id']}/skip/", {}, format="json").status_code == 400
    nxt = client.post(f"/api/v1/projects/{crew.project.pk}/next/").json()
    assert nxt["item_id"] != lease["item_id"]


def test_statements_per_request(crew, api_for):
    """Token auth is cached: next and submit stay at 5 SQL statements or fewer (BEGIN counted)."""
    client = api_for(crew.annotator)
    client.get("/api/v1/projects/")  # warms the token cache
    with CaptureQueriesContext(connection) as q_next:
        lease = client.post(f"/api/v1/projects/{crew.project.pk}/next/").json()
    with CaptureQueriesContext(connection) as q_submit:
        r = client.post(
            f"/api/v1/items/{lease['item_id']}/submit/",
            {"payload": {"choice": "B"}, "idempotency_key": "q"},
            format="json",
        )
    assert r.status_code == 201

    def statements(ctx):
        return [
            q["sql"]
            for q in ctx.captured_queries
            if not q["sql"].startswith(("SAVEPOINT", "RELEASE", "COMMIT"))
        ]

    # inside the test's transaction there is no BEGIN; one is added on SQLite in production
    begin = 1 if connection.vendor == "sqlite" else 0
    assert len(statements(q_next)) + begin <= 5, statements(q_next)
    assert len(statements(q_submit)) + begin <= 5, statements(q_submit)


def test_prompt_import_json_rows_and_all_or_nothing(crew, api_for):
    client = api_for(crew.admin)
    url = f"/api/v1/projects/{crew.project.pk}/prompts/import/"
    before = Prompt.objects.count()
    bad = client.post(url, {"rows": [{"prompt": "fine"}, {"prompt": ""}]}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "import_invalid"
    assert bad.json()["details"] == {"location": "line 2", "field": "prompt"}
    assert Prompt.objects.count() == before  # all or nothing
    ok = client.post(url, {"rows": [{"prompt": "Hello there?"}, {"prompt": "Hello there?"}]}, format="json")
    assert ok.status_code == 201
    assert ok.json()["rows_imported"] == 1 and ok.json()["duplicates_dropped"] == 1
    neither = client.post(url, {}, format="json")
    assert neither.status_code == 400 and "either a file or rows" in neither.json()["message"]


def test_candidate_import_file_upload_builds_items(crew, api_for):
    client = api_for(crew.admin)
    lines = "\n".join(
        f'{{"prompt": "Name a colour", "response": "{text}", "model": "{model}"}}'
        for text, model in (("Red", "m-a"), ("Blue", "m-b"))
    )
    upload = io.BytesIO(lines.encode())
    upload.name = "cands.jsonl"
    items_before = Item.objects.filter(project=crew.project).count()
    r = client.post(
        f"/api/v1/projects/{crew.project.pk}/candidates/import/", {"file": upload}, format="multipart"
    )
    assert r.status_code == 201, r.json()
    assert r.json()["candidates_created"] == 2 and r.json()["items_created"] == 1
    assert Item.objects.filter(project=crew.project).count() == items_before + 1
    bad = io.BytesIO(b'{"prompt": "x", "response": "y", "model": "m"}\n{"prompt": "x"\n')
    bad.name = "bad.jsonl"
    r = client.post(
        f"/api/v1/projects/{crew.project.pk}/candidates/import/", {"file": bad}, format="multipart"
    )
    assert r.status_code == 400 and r.json()["details"]["location"] == "line 2"


def test_project_create_update_and_members(crew, api_for, user_factory):
    staff = api_for(crew.staff)
    r = staff.post("/api/v1/projects/create/", {"name": "Rank it", "task_kind": "ranking"}, format="json")
    assert r.status_code == 201 and r.json()["responses_per_item"] == 4
    pid = r.json()["id"]
    bad = staff.post(
        "/api/v1/projects/create/",
        {"name": "P", "task_kind": "pairwise", "responses_per_item": 3},
        format="json",
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    up = staff.post(f"/api/v1/projects/{pid}/update/", {"gold_rate": 0.1, "allow_ties": False}, format="json")
    assert up.status_code == 200 and up.json()["gold_rate"] == 0.1
    assert staff.post(f"/api/v1/projects/{pid}/update/", {"gold_rate": 2}, format="json").status_code == 400
    user_factory("newbie")
    m = staff.post(
        f"/api/v1/projects/{pid}/members/set/", {"username": "newbie", "role": "reviewer"}, format="json"
    )
    assert m.status_code == 200 and m.json()["role"] == "reviewer"
    ghost = staff.post(
        f"/api/v1/projects/{pid}/members/set/", {"username": "ghost", "role": "admin"}, format="json"
    )
    assert ghost.status_code == 404 and ghost.json()["code"] == "user_not_found"


def test_stats_agreement_leaderboard_and_plot(crew, api_for, make_item):
    from inference.models import Engine, ModelVersion

    v1 = ModelVersion.objects.create(name="base <b>", engine=Engine.EXTERNAL)
    v2 = ModelVersion.objects.create(name="dpo-1", engine=Engine.EXTERNAL)
    Item.objects.filter(project=crew.project).delete()
    for _ in range(3):
        item = make_item(crew.project, version=v1)
        # make the second candidate come from v2
        slot = item.slots.order_by("position").last()
        slot.candidate.model_version = v2
        slot.candidate.save()
    for user in (crew.annotator, crew.other_annotator):
        client = api_for(user)
        for n in range(3):
            lease = client.post(f"/api/v1/projects/{crew.project.pk}/next/").json()
            dpo = next(c["id"] for c in lease["candidates"] if "1 to" in c["text"])  # position 1 = v2
            choice = "A" if lease["candidates"][0]["id"] == dpo else "B"
            client.post(
                f"/api/v1/items/{lease['item_id']}/submit/",
                {"payload": {"choice": choice}, "idempotency_key": f"{user.pk}-{n}"},
                format="json",
            )
    reviewer = api_for(crew.reviewer)
    stats = reviewer.get(f"/api/v1/projects/{crew.project.pk}/stats/").json()
    assert stats["annotations_done"] == 6 and stats["items_done"] == 3
    assert {a["username"]: a["annotations"] for a in stats["annotators"]}["annotator"] == 3
    agreement = reviewer.get(f"/api/v1/projects/{crew.project.pk}/agreement/").json()
    assert agreement["level"] == "nominal" and agreement["units"] == 3
    assert agreement["position_bias"]["decisive"] == 6
    board = reviewer.get(f"/api/v1/projects/{crew.project.pk}/leaderboard/?bootstrap=50").json()
    assert [row["model_version"] for row in board] == ["dpo-1", "base <b>"]
    assert board[0]["wins"] == 6 and board[0]["ci_low"] <= board[0]["rating"] <= board[0]["ci_high"]
    svg = reviewer.get(f"/api/v1/projects/{crew.project.pk}/leaderboard.svg?bootstrap=20")
    assert svg.status_code == 200 and svg["Content-Type"].startswith("image/svg+xml")
    text = svg.content.decode()
    assert "base &lt;b&gt;" in text and "<b>" not in text and text.startswith("<svg")


def test_pagination(crew, api_for):
    client = api_for(crew.reviewer)
    users = [crew.annotator, crew.other_annotator]
    for user in users:
        c = api_for(user)
        for n in range(2):
            lease = c.post(f"/api/v1/projects/{crew.project.pk}/next/").json()
            c.post(
                f"/api/v1/items/{lease['item_id']}/submit/",
                {"payload": {"choice": "A"}, "idempotency_key": f"p{n}"},
                format="json",
            )
    page = client.get(f"/api/v1/projects/{crew.project.pk}/annotations/?page_size=3").json()
    assert page["count"] == 4 and len(page["results"]) == 3 and page["next"]
    page2 = client.get(f"/api/v1/projects/{crew.project.pk}/annotations/?page_size=3&page=2").json()
    assert len(page2["results"]) == 1
    only = client.get(f"/api/v1/projects/{crew.project.pk}/annotations/?annotator={crew.annotator.pk}").json()
    assert only["count"] == 2
    assert client.get("/api/v1/annotations/?page=9").json()["code"] == "not_found"


def test_throttling_per_user(crew, api_for):
    from rest_framework.settings import api_settings

    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "user": "3/min"}
    with override_settings(REST_FRAMEWORK={**_rf(), "DEFAULT_THROTTLE_RATES": rates}):
        from feedback.api_support import throttle_store

        throttle_store.clear()
        a, b = api_for(crew.annotator), api_for(crew.reviewer)
        codes = [a.get("/api/v1/projects/").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = a.get("/api/v1/projects/")
        assert r.json()["code"] == "throttled" and r.json()["details"]["retry_after_s"] > 0
        assert b.get("/api/v1/projects/").status_code == 200  # per user
        throttle_store.clear()


def _rf():
    from django.conf import settings

    return settings.REST_FRAMEWORK


def test_schema_and_local_docs(client):
    schema = client.get("/api/v1/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in (
        "/api/v1/projects/{project_id}/next/",
        "/api/v1/items/{item_id}/submit/",
        "/api/v1/auth/token/",
    ):
        assert path in text
    assert "ItemNextApi" not in text or "LeaseOutput" in text
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(not a.startswith(("http://", "https://", "//")) for a in assets), assets
    for asset in assets:
        if asset.endswith((".js", ".css")):
            assert client.get(asset).status_code == 200, asset
    redoc = client.get("/api/v1/redoc/").content.decode()
    assert "cdn" not in redoc.lower()


def test_hand_built_hot_path_bodies_match_their_serializers(crew, api_for):
    """next and submit build their JSON by hand for speed; the documented serializers must agree."""
    from feedback.apis import (
        AnnotationSubmitApi,
        LeaseOutputSerializer,
        annotation_as_dict,
        lease_as_dict,
    )
    from feedback.services.distribution import annotation_submit, item_next

    lease = item_next(project=crew.project, user=crew.annotator)
    assert lease_as_dict(lease) == LeaseOutputSerializer(lease).data
    reloaded = item_next(project=crew.project, user=crew.annotator)  # the ORM path (a reload)
    assert lease_as_dict(reloaded) == LeaseOutputSerializer(reloaded).data
    ann, _ = annotation_submit(
        user=crew.annotator, item_id=lease.item_id, payload={"choice": "A"}, idempotency_key="h"
    )
    assert annotation_as_dict(ann) == AnnotationSubmitApi.OutputSerializer(ann).data
    retry, _ = annotation_submit(
        user=crew.annotator, item_id=lease.item_id, payload={"choice": "A"}, idempotency_key="h"
    )
    assert annotation_as_dict(retry) == annotation_as_dict(ann)
