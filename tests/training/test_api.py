"""The training API: every role against every endpoint, filters as 4xx, and uploading documents for
continued pretraining (all or nothing, named errors, stored once)."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from inference.models import Engine, ModelVersion
from training.documents import DocumentUploadError, documents_upload
from training.models import TrainingRun
from training.selectors import documents_dir, training_advice

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "outsider", "annotator", "reviewer", "admin")


@pytest.fixture
def setup(crew, settings, tmp_path):
    settings.DOCUMENTS_DIR = tmp_path / "documents"
    version = ModelVersion.objects.create(name="base", base_model="/nowhere", engine=Engine.TRANSFORMERS)
    run = TrainingRun.objects.create(
        method="dpo", project=crew.project, parent_version=version, created_by=crew.admin
    )
    return version, run


def _files():
    return {"files": [SimpleUploadedFile("notes.md", b"# Notes\n\nDomain text long enough to keep.\n")]}


# name -> (method, url(crew, version, run), body(crew, version, run), expected statuses in ROLES order)
MATRIX = {
    "runs list": ("get", lambda c, v, r: "/api/v1/training-runs/", None, (401, 200, 200, 200, 200)),
    # admins pass the permission check; the missing snapshot is then a 400 (nothing is queued)
    "run create": (
        "post",
        lambda c, v, r: "/api/v1/training-runs/create/",
        lambda c, v, r: {"method": "dpo", "project": c.project.pk, "parent_version": v.pk},
        (401, 403, 403, 403, 400),
    ),
    "run detail": ("get", lambda c, v, r: f"/api/v1/training-runs/{r.pk}/", None, (401, 403, 403, 403, 200)),
    "run cancel": (
        "post",
        lambda c, v, r: f"/api/v1/training-runs/{r.pk}/cancel/",
        None,
        (401, 403, 403, 403, 200),
    ),
    # a queued run cannot be queued again: 409 once permitted
    "run requeue": (
        "post",
        lambda c, v, r: f"/api/v1/training-runs/{r.pk}/requeue/",
        None,
        (401, 403, 403, 403, 409),
    ),
    "advice": (
        "get",
        lambda c, v, r: f"/api/v1/projects/{c.project.pk}/training-advice/",
        None,
        (401, 403, 403, 403, 200),
    ),
    "documents list": (
        "get",
        lambda c, v, r: f"/api/v1/projects/{c.project.pk}/documents/",
        None,
        (401, 403, 403, 403, 200),
    ),
    "documents upload": (
        "post",
        lambda c, v, r: f"/api/v1/projects/{c.project.pk}/documents/",
        lambda c, v, r: _files(),
        (401, 403, 403, 403, 201),
    ),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_training_permission_matrix(crew, api_for, setup, name):
    method, url, body, expect = MATRIX[name]
    version, run = setup
    got = {}
    for role in ROLES:
        with transaction.atomic():
            user = None if role == "anonymous" else crew.user(role)
            client = api_for(user)
            data = body(crew, version, run) if body else None
            fmt = "multipart" if name == "documents upload" else "json"
            response = getattr(client, method)(url(crew, version, run), data, format=fmt)
            got[role] = response.status_code
            if response.status_code >= 400:
                assert set(response.json()) >= {"code", "message"}, (role, response.json())
            transaction.set_rollback(True)
    assert got == dict(zip(ROLES, expect, strict=True)), name


def test_runs_list_shows_an_annotator_nothing_and_filters_by_project(crew, api_for, setup):
    _, run = setup
    assert api_for(crew.annotator).get("/api/v1/training-runs/").json()["results"] == []
    admin = api_for(crew.admin)
    ids = [r["id"] for r in admin.get(f"/api/v1/training-runs/?project={crew.project.pk}").json()["results"]]
    assert ids == [run.pk]
    bad = admin.get("/api/v1/training-runs/?project=abc")
    assert bad.status_code == 400 and bad.json()["code"] and bad.json()["message"]


def test_upload_is_all_or_nothing_and_names_the_file_and_line(crew, setup):
    good = ("a.txt", b"A plain document about the domain, long enough.")
    broken = ("docs.jsonl", b'{"text": "one"}\n{"text": "two"}\n{"text": 3}\n')
    with pytest.raises(DocumentUploadError, match=r"docs\.jsonl:3: expected an object with a string 'text'"):
        documents_upload(project=crew.project, files=[good, broken])
    with pytest.raises(DocumentUploadError, match=r"bad\.txt: not UTF-8"):
        documents_upload(project=crew.project, files=[good, ("bad.txt", b"caf\xe9 latin-1")])
    with pytest.raises(DocumentUploadError, match=r"slides\.pdf: unsupported file type"):
        documents_upload(project=crew.project, files=[good, ("slides.pdf", b"%PDF")])
    folder = documents_dir(crew.project)
    assert not folder.exists() or not any(folder.iterdir())  # nothing stored by a refused upload


def test_upload_stores_once_and_the_advisor_counts_documents(crew, setup):
    lines = "".join(json.dumps({"text": f"Document number {i} about the domain."}) + "\n" for i in range(3))
    files = [("../../etc/passwd.md", b"# Heading\n\nA markdown document."), ("corpus.jsonl", lines.encode())]
    report = documents_upload(project=crew.project, files=files)
    assert report.documents == 4 and len(report.stored) == 2 and report.duplicates == []
    folder = documents_dir(crew.project)
    assert sorted(p.parent for p in folder.iterdir()) == [folder, folder]  # never outside the folder
    again = documents_upload(project=crew.project, files=files[:1])
    assert again.stored == [] and again.duplicates == ["../../etc/passwd.md"] and again.documents == 0
    cpt = next(m for m in training_advice(project=crew.project).methods if m.method == "cpt")
    assert cpt.supported and cpt.count == 4


def test_upload_page_stores_files_and_reports_errors(crew, client, setup):
    client.force_login(crew.admin)
    url = f"/training/projects/{crew.project.pk}/documents/"
    response = client.post(url, _files(), follow=True)
    assert b"Stored 1 file(s) with 1 document(s)" in response.content
    response = client.post(url, {"files": [SimpleUploadedFile("x.jsonl", b"not json\n")]}, follow=True)
    assert b"Nothing was uploaded: x.jsonl:1: invalid JSON" in response.content
    assert len(list(documents_dir(crew.project).iterdir())) == 1
    client.force_login(crew.reviewer)
    assert client.post(url, _files()).status_code == 403
