"""manage.py export: preview, create and write, write again byte-identically, list."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from feedback.services.projects import membership_set

from .conftest import annotate_project, shorter_first

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("export", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_export_command(project_factory, user_factory, make_item, settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    user = user_factory()
    project = project_factory(name="Cli Project", task_kind="ranking", responses_per_item=3)
    membership_set(project=project, user=user, role="annotator")
    for i in range(10):
        make_item(project, texts=[f"x{i}", f"yy {i}", f"zzz zz {i}"])
    annotate_project(project, [user], lambda u, item, shown: {"ranking": shorter_first(shown)})

    preview = json.loads(run("--project", project.slug, "--preview", "--ranking-pairs", "best_vs_rest"))
    assert sum(preview["row_counts"].values()) == 10 * 2

    first = json.loads(
        run("--project", project.slug, "--name", "cli", "--out", str(tmp_path / "a"), "--seed", "5")
    )
    assert first["path"] == str(tmp_path / "a")
    assert sum(first["row_counts"].values()) == 30
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["content_hash"] == first["content_hash"] and manifest["seed"] == 5

    again = json.loads(run("--snapshot", str(first["snapshot_id"]), "--out", str(tmp_path / "b")))
    assert again["content_hash"] == first["content_hash"]
    for name in ("train.jsonl", "test.jsonl", "train.parquet", "manifest.json", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    assert "written" in run("--list")
    with pytest.raises(CommandError, match="no project"):
        run("--project", "nope")
    with pytest.raises(CommandError, match="min_agreement"):
        run("--project", project.slug, "--min-agreement", "3", "--preview")
