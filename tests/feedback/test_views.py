"""The annotator pages through Django's test client: access, rendering, submit/skip/undo round trips."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from feedback.models import Annotation, Lease, Skip
from feedback.services.projects import membership_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def annotator(user_factory):
    return user_factory("ann")


def _login(client, user):
    client.force_login(user)
    return client


def _project(project_factory, user, **fields):
    project = project_factory(**fields)
    membership_set(project=project, user=user, role="annotator")
    return project


def _config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="annotate-config" type="application/json">') + len(
        '<script id="annotate-config" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def test_pages_need_login(client, project_factory):
    project = project_factory()
    for url in (reverse("home"), reverse("annotate", args=[project.slug])):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_login_page_renders(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200 and b'name="username"' in response.content


def test_non_member_is_refused(client, project_factory, user_factory, make_item):
    project = project_factory()
    make_item(project)
    _login(client, user_factory("stranger"))
    assert client.get(reverse("annotate", args=[project.slug])).status_code == 404
    assert client.get(reverse("project_progress", args=[project.slug])).status_code == 404


def test_annotators_do_not_see_progress(client, annotator, project_factory, make_item):
    project = _project(project_factory, annotator)
    make_item(project)
    assert _login(client, annotator).get(reverse("project_progress", args=[project.slug])).status_code == 403


def test_home_lists_projects_with_links(client, annotator, project_factory, make_item):
    project = _project(project_factory, annotator, name="Home test")
    make_item(project)
    response = _login(client, annotator).get(reverse("home"))
    assert response.status_code == 200
    assert reverse("annotate", args=[project.slug]).encode() in response.content
    # an annotator sees no progress link; a reviewer does
    assert reverse("project_progress", args=[project.slug]).encode() not in response.content
    membership_set(project=project, user=annotator, role="reviewer")
    assert reverse("project_progress", args=[project.slug]).encode() in client.get(reverse("home")).content


@pytest.mark.parametrize("kind", ["ranking", "pairwise", "binary"])
def test_annotate_page_shows_the_leased_order(client, annotator, project_factory, make_item, kind):
    project = _project(project_factory, annotator, task_kind=kind, guidelines="## Be **fair**")
    make_item(project)
    response = _login(client, annotator).get(reverse("annotate", args=[project.slug]))
    assert response.status_code == 200
    assert "script-src 'self'" in response["Content-Security-Policy"]
    lease = Lease.objects.get(annotator=annotator)
    config = _config(response)
    assert config["order_shown"] == lease.order_shown
    assert config["lease"] == lease.pk and config["kind"] == kind
    html = response.content.decode()
    positions = [html.index(f'data-candidate-id="{cid}"') for cid in lease.order_shown]
    assert positions == sorted(positions)
    assert "<h2>Be <strong>fair</strong></h2>" in html
    # a reload shows the same item in the same order
    assert _config(client.get(reverse("annotate", args=[project.slug])))["order_shown"] == lease.order_shown


def test_candidate_html_is_escaped(client, annotator, project_factory, make_item):
    project = _project(project_factory, annotator, task_kind="pairwise")
    make_item(
        project,
        texts=["<script>window.__x=1</script>", '<img src=x onerror="alert(1)"> [a](javascript:alert(1))'],
    )
    html = _login(client, annotator).get(reverse("annotate", args=[project.slug])).content.decode()
    assert "<script>window.__x" not in html and "&lt;script&gt;window.__x=1&lt;/script&gt;" in html
    assert "<img" not in html and 'href="javascript:' not in html


def test_submit_is_idempotent_and_serves_the_next_item(client, annotator, project_factory, make_item):
    project = _project(project_factory, annotator, task_kind="pairwise")
    make_item(project)
    make_item(project)
    config = _config(_login(client, annotator).get(reverse("annotate", args=[project.slug])))
    body = {
        "item_id": config["item"],
        "payload": {"choice": "B", "strength": "clear"},
        "idempotency_key": "k-1",
        "time_spent_ms": 1234,
        "comment": "close call",
        "flags": ["broken"],
        "demonstration": "A better answer.",
    }
    url = reverse("annotate_submit", args=[project.slug])
    first = client.post(url, json.dumps(body), content_type="application/json")
    assert first.status_code == 201, first.content
    again = client.post(url, json.dumps(body), content_type="application/json")
    assert again.status_code == 200 and again.json()["annotation_id"] == first.json()["annotation_id"]
    annotation = Annotation.objects.get()
    assert annotation.order_shown == config["order_shown"]
    assert annotation.payload["choice"] == "B" and annotation.payload["chosen"] == config["order_shown"][1]
    assert annotation.time_spent_ms == 1234 and annotation.flags == ["broken"]
    assert annotation.demonstration.text == "A better answer."
    following = client.get(first.json()["next"])
    assert _config(following)["item"] != config["item"]
    assert b"Undo" in following.content


def test_submit_errors_are_json(client, annotator, project_factory, make_item):
    project = _project(project_factory, annotator, task_kind="pairwise")
    make_item(project)
    config = _config(_login(client, annotator).get(reverse("annotate", args=[project.slug])))
    url = reverse("annotate_submit", args=[project.slug])
    bad = client.post(url, "not json", content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    body = {"item_id": config["item"], "payload": {"choice": "C"}, "idempotency_key": "k"}
    wrong = client.post(url, json.dumps(body), content_type="application/json")
    assert wrong.status_code == 400 and "choice" in wrong.json()["message"]
    assert not Annotation.objects.exists()
    elsewhere = client.post(url, json.dumps({**body, "item_id": 10**9}), content_type="application/json")
    assert elsewhere.status_code == 404


def test_submit_needs_csrf(annotator, project_factory, make_item):
    from django.test import Client

    project = _project(project_factory, annotator, task_kind="pairwise")
    make_item(project)
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    url = reverse("annotate_submit", args=[project.slug])
    assert client.post(url, "{}", content_type="application/json").status_code == 403


def test_skip_and_undo(client, annotator, project_factory, make_item):
    project = _project(project_factory, annotator, task_kind="binary", responses_per_item=2)
    first_item = make_item(project)
    make_item(project)
    config = _config(_login(client, annotator).get(reverse("annotate", args=[project.slug])))
    skipped = config["item"]
    response = client.post(
        reverse("annotate_skip", args=[project.slug]),
        {"item_id": skipped, "reason": "unsure", "detail": "no idea"},
    )
    assert response.status_code == 302
    assert Skip.objects.get(item_id=skipped).reason == "unsure: no idea"
    config = _config(client.get(reverse("annotate", args=[project.slug])))
    assert config["item"] != skipped
    ids = config["order_shown"]
    body = {
        "item_id": config["item"],
        "payload": {
            "labels": {str(ids[0]): "up", str(ids[1]): "down"},
            "reasons": {str(ids[1]): ["incorrect"]},
        },
        "idempotency_key": "k-2",
        "time_spent_ms": 10,
    }
    assert (
        client.post(
            reverse("annotate_submit", args=[project.slug]), json.dumps(body), content_type="application/json"
        ).status_code
        == 201
    )
    annotation = Annotation.objects.get()
    response = client.post(reverse("annotate_undo", args=[project.slug]), {"annotation_id": annotation.pk})
    assert response.status_code == 302 and not Annotation.objects.exists()
    again = _config(client.get(reverse("annotate", args=[project.slug])))
    assert again["item"] == config["item"] and again["order_shown"] == ids
    assert first_item.pk in (skipped, config["item"])


def test_progress_page_for_reviewers(client, user_factory, annotator, project_factory, make_item):
    reviewer = user_factory("rev")
    project = _project(project_factory, annotator, task_kind="pairwise")
    membership_set(project=project, user=reviewer, role="reviewer")
    make_item(project)
    make_item(project)
    config = _config(_login(client, annotator).get(reverse("annotate", args=[project.slug])))
    body = {
        "item_id": config["item"],
        "payload": {"choice": "A"},
        "idempotency_key": "p",
        "time_spent_ms": 4000,
    }
    client.post(
        reverse("annotate_submit", args=[project.slug]), json.dumps(body), content_type="application/json"
    )
    client.get(reverse("annotate", args=[project.slug]))  # holds the second item
    response = _login(client, reviewer).get(reverse("project_progress", args=[project.slug]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="items-done">1 / 2<' in html and 'id="annotations-done">1 / 2<' in html
    rows = {
        re.sub(r"<[^>]+>", "", cells[0]).strip(): [re.sub(r"<[^>]+>", "", c).strip() for c in cells[1:]]
        for cells in (
            re.findall(r"<td>(.*?)</td>", tr, re.S) for tr in re.findall(r"<tr>(.*?)</tr>", html, re.S)
        )
        if cells
    }
    # role, annotations, skips, holding, median time
    assert rows["ann"] == ["annotator", "1", "0", "1", "4.0 s"]
    assert rows["rev"] == ["reviewer", "0", "0", "0", "—"]


def test_submit_after_the_session_ends_is_a_json_401(client, annotator, project_factory, make_item):
    project = _project(project_factory, annotator, task_kind="pairwise")
    make_item(project)
    config = _config(_login(client, annotator).get(reverse("annotate", args=[project.slug])))
    client.logout()
    body = {"item_id": config["item"], "payload": {"choice": "A"}, "idempotency_key": "late"}
    response = client.post(
        reverse("annotate_submit", args=[project.slug]), json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
    assert not Annotation.objects.exists()
