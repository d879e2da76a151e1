"""The snapshot API: who may do what, preview before writing, streamed downloads, the 409 on a changed hash."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from rest_framework.test import APIClient

from feedback.models import Annotation, DatasetSnapshot
from feedback.services.projects import membership_set

from .conftest import annotate_project, shorter_first

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(project_factory, user_factory, make_item, settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    admin, reviewer, annotator, outsider = (
        user_factory(n) for n in ("admin", "reviewer", "annotator", "outsider")
    )
    project = project_factory(name="API", task_kind="ranking", responses_per_item=3)
    membership_set(project=project, user=admin, role="admin")
    membership_set(project=project, user=reviewer, role="reviewer")
    membership_set(project=project, user=annotator, role="annotator")
    for i in range(12):
        make_item(project, texts=[f"a{i}", f"bb {i}", f"ccc ccc {i}"])
    annotate_project(project, [annotator], lambda u, item, shown: {"ranking": shorter_first(shown)})
    return project, {"admin": admin, "reviewer": reviewer, "annotator": annotator, "outsider": outsider}


def client_for(user) -> APIClient:
    c = APIClient()
    c.force_authenticate(user)
    return c


def body(project, **extra):
    return {"kind": "preference", "project_ids": [project.id], "test_fraction": 0.25, **extra}


def streamed(response) -> bytes:
    return b"".join(response.streaming_content)


def test_preview_then_create_then_download(setup):
    project, users = setup
    api = client_for(users["admin"])
    preview = api.post("/api/v1/snapshots/preview/", body(project), format="json")
    assert preview.status_code == 200, preview.json()
    counts = preview.json()["row_counts"]
    assert counts["train"] + counts["test"] == 36

    created = api.post("/api/v1/snapshots/create/", body(project, name="via api"), format="json")
    assert created.status_code == 201, created.json()
    snap = created.json()
    assert snap["status"] == "written" and snap["row_counts"] == counts and len(snap["content_hash"]) == 64

    detail = api.get(f"/api/v1/snapshots/{snap['id']}/").json()
    names = {f["name"] for f in detail["files"]}
    assert {"train.jsonl", "test.jsonl", "train.parquet", "manifest.json", "README.md"} <= names

    got = api.get(f"/api/v1/snapshots/{snap['id']}/files/train.jsonl")
    assert got.status_code == 200 and got["X-Content-Hash"] == snap["content_hash"]
    lines = streamed(got).decode().splitlines()
    assert len(lines) == counts["train"] and json.loads(lines[0])["chosen"][0]["role"] == "assistant"

    tar = api.get(f"/api/v1/snapshots/{snap['id']}/download.tar")
    assert tar.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(streamed(tar))) as archive:
        members = {m.name.split("/", 1)[1]: archive.extractfile(m).read() for m in archive.getmembers()}
    from pathlib import Path

    root = Path(DatasetSnapshot.objects.get(pk=snap["id"]).path)
    assert members == {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert api.get(f"/api/v1/snapshots/{snap['id']}/files/../../etc/passwd").status_code == 404
    listed = api.get("/api/v1/snapshots/").json()
    assert [s["id"] for s in listed["results"]] == [snap["id"]]


def test_roles(setup):
    project, users = setup
    snap = (
        client_for(users["admin"])
        .post("/api/v1/snapshots/create/", body(project, name="r"), format="json")
        .json()
    )
    reviewer, annotator, outsider = (client_for(users[k]) for k in ("reviewer", "annotator", "outsider"))
    # reviewers read, but neither build nor download
    assert reviewer.get(f"/api/v1/snapshots/{snap['id']}/").status_code == 200
    assert reviewer.get(f"/api/v1/snapshots/{snap['id']}/files/train.jsonl").status_code == 403
    assert reviewer.post("/api/v1/snapshots/preview/", body(project), format="json").status_code == 403
    # annotators never see snapshots; outsiders do not learn they exist
    assert annotator.get(f"/api/v1/snapshots/{snap['id']}/").status_code == 404
    assert (
        annotator.post("/api/v1/snapshots/create/", body(project, name="x"), format="json").status_code == 403
    )
    assert annotator.get("/api/v1/snapshots/").json()["results"] == []
    assert outsider.get(f"/api/v1/snapshots/{snap['id']}/").status_code == 404
    assert outsider.post("/api/v1/snapshots/preview/", body(project), format="json").status_code == 404
    assert APIClient().get("/api/v1/snapshots/").status_code in (401, 403)


def test_bad_input_and_changed_rows(setup):
    project, users = setup
    api = client_for(users["admin"])
    bad = api.post("/api/v1/snapshots/preview/", body(project, date_from="not a date"), format="json")
    assert bad.status_code == 400 and "date_from" in bad.json()["message"]
    bad = api.post("/api/v1/snapshots/preview/", body(project, aggregation="median"), format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"

    snap = api.post(
        "/api/v1/snapshots/create/", body(project, name="w", formats=["jsonl"]), format="json"
    ).json()
    again = api.post(f"/api/v1/snapshots/{snap['id']}/write/", {"formats": ["jsonl"]}, format="json")
    assert again.status_code == 200 and again.json()["content_hash"] == snap["content_hash"]
    Annotation.objects.filter(item__project=project).order_by("id").first().delete()
    changed = api.post(f"/api/v1/snapshots/{snap['id']}/write/", {"formats": ["jsonl"]}, format="json")
    assert changed.status_code == 409 and changed.json()["code"] == "snapshot_changed"

    push = api.post(f"/api/v1/snapshots/{snap['id']}/push/", {"repo_id": "me/data"}, format="json")
    assert push.status_code == 400 and "HF_TOKEN" in push.json()["message"]


def test_background_write_through_celery(setup, settings):
    """background=true queues the write on the default queue (run eagerly here) and answers 202."""
    from config.celery import app
    from feedback.exports.tasks import snapshot_write_task

    assert "feedback.exports.tasks.snapshot_write_task" in app.tasks  # the worker finds it
    assert snapshot_write_task.queue == "default"
    project, users = setup
    api = client_for(users["admin"])
    res = api.post("/api/v1/snapshots/create/", body(project, name="bg", background=True), format="json")
    assert res.status_code == 202
    snap = DatasetSnapshot.objects.get(pk=res.json()["id"])
    assert snap.status == "written" and sum(snap.row_counts.values()) == 36
    assert "progress" not in snap.stats  # replaced by the final stats
    assert snapshot_write_task(snap.pk, ["jsonl"]) == "not a draft"  # a redelivered task does nothing


def test_progress_bar_while_writing(setup):
    from django.test import Client

    from feedback.exports.services import snapshot_create

    project, users = setup
    snap = snapshot_create(name="slow", spec={"kind": "preference", "project_ids": [project.id]})
    DatasetSnapshot.objects.filter(pk=snap.pk).update(stats={"progress": {"done": 10, "total": 36}})
    c = Client()
    c.force_login(users["admin"])
    html = c.get(f"/exports/{snap.pk}/").content.decode()
    assert 'http-equiv="refresh"' in html and 'value="10"' in html and 'max="36"' in html


def test_push_to_hub_uploads_the_card_then_the_dataset(setup, monkeypatch):
    """The Hub is not reachable here: its client is replaced by a recorder; the order and the files
    handed to it are what is checked (the card first, so push_to_hub merges its metadata into it)."""
    import datasets
    import huggingface_hub

    from feedback.exports.services import snapshot_push_to_hub

    project, users = setup
    api = client_for(users["admin"])
    snap_id = api.post(
        "/api/v1/snapshots/create/", body(project, name="hub", formats=["hf"]), format="json"
    ).json()["id"]
    calls: list[tuple] = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw["repo_type"], kw["private"]))

        def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, repo_type, commit_message):
            with open(path_or_fileobj, encoding="utf-8") as fh:
                calls.append(("upload_file", path_in_repo, repo_type, fh.read()))

    def push(self, repo_id, **kw):
        calls.append(("push_to_hub", repo_id, sorted(self)))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", push)
    snap = DatasetSnapshot.objects.get(pk=snap_id)
    url = snapshot_push_to_hub(snapshot=snap, repo_id="me/data", token="hf_x")
    assert url.endswith("/datasets/me/data")
    assert [c[0] for c in calls] == ["token", "create_repo", "upload_file", "push_to_hub"]
    card = calls[2][3]
    assert calls[2][1:3] == ("README.md", "dataset") and snap.content_hash in card
    assert calls[3][1] == "me/data" and "train" in calls[3][2]
