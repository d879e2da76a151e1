"""The export pages: build with filters, counts before writing, download; annotators kept out."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from feedback.models import DatasetSnapshot
from feedback.services.projects import membership_set

from .conftest import annotate_project, shorter_first

pytestmark = pytest.mark.django_db


@pytest.fixture
def site(project_factory, user_factory, make_item, settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    admin, reviewer, annotator = user_factory("padmin"), user_factory("previewer"), user_factory("pann")
    project = project_factory(name="Pages", task_kind="ranking", responses_per_item=3)
    membership_set(project=project, user=admin, role="admin")
    membership_set(project=project, user=reviewer, role="reviewer")
    membership_set(project=project, user=annotator, role="annotator")
    for i in range(8):
        make_item(project, texts=[f"p{i}", f"pp {i}", f"ppp ppp {i}"])
    annotate_project(project, [annotator], lambda u, item, shown: {"ranking": shorter_first(shown)})
    return project, admin, reviewer, annotator


def login(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def form_data(project, **extra):
    data = {
        "kind": "preference",
        "projects": [str(project.pk)],
        "min_agreement": "0",
        "min_votes": "1",
        "aggregation": "all",
        "ranking_pairs": "best_vs_rest",
        "ties": "drop",
        "include_margin": "on",
        "style": "conversational",
        "license": "cc-by-4.0",
        "seed": "0",
        "test_fraction": "0.25",
        "formats": ["jsonl", "parquet"],
    }
    data.update(extra)
    return data


def test_build_preview_create_download(site):
    project, admin, _, _ = site
    c = login(admin)
    page = c.get("/exports/")
    assert page.status_code == 200 and b"Build a snapshot" in page.content

    preview = c.post("/exports/", form_data(project, action="preview"))
    assert preview.status_code == 200
    html = preview.content.decode()
    train = int(re.search(r'data-testid="train-rows">(\d+)<', html).group(1))
    test = int(re.search(r'data-testid="test-rows">(\d+)<', html).group(1))
    assert train + test == 8 * 2  # best versus rest of 3: two pairs per ranking
    assert not DatasetSnapshot.objects.exists()  # a preview writes nothing

    missing_name = c.post("/exports/", form_data(project, action="create"))
    assert missing_name.status_code == 200 and b"give the snapshot a name" in missing_name.content

    created = c.post("/exports/", form_data(project, action="create", name="from the page"))
    snap = DatasetSnapshot.objects.get()
    assert created.status_code == 302 and created["Location"] == f"/exports/{snap.pk}/"
    assert snap.row_counts == {"train": train, "test": test} and snap.filters["license"] == "cc-by-4.0"

    detail = c.get(f"/exports/{snap.pk}/").content.decode()
    assert snap.content_hash in detail and f"/exports/{snap.pk}/files/train.jsonl" in detail
    got = c.get(f"/exports/{snap.pk}/files/train.jsonl")
    assert b"".join(got.streaming_content).count(b"\n") == train
    assert c.get(f"/exports/{snap.pk}/download.tar").status_code == 200
    rewritten = c.post(f"/exports/{snap.pk}/write/", {"formats": ["jsonl", "parquet"]}, follow=True)
    assert b"unchanged" in rewritten.content


def test_roles_on_pages(site):
    project, admin, reviewer, annotator = site
    login(admin).post("/exports/", form_data(project, action="create", name="s"))
    snap = DatasetSnapshot.objects.get()
    assert login(annotator).get("/exports/").status_code == 403
    assert login(annotator).get(f"/exports/{snap.pk}/").status_code == 404
    r = login(reviewer)
    page = r.get("/exports/")
    assert page.status_code == 200 and b"Build a snapshot" not in page.content and b">s</a>" in page.content
    assert b"Only project admins" in r.get(f"/exports/{snap.pk}/").content
    assert r.get(f"/exports/{snap.pk}/files/train.jsonl").status_code == 403
    assert r.post("/exports/", form_data(project, action="preview")).status_code == 403
    assert Client().get("/exports/").status_code == 302  # to the login page
