"""Filters, the split by prompt, byte-identical re-export, and a hash that never changes."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from feedback.exports.services import (
    SnapshotChangedError,
    snapshot_create,
    snapshot_preview,
    snapshot_write,
)
from feedback.exports.spec import ExportSpecError
from feedback.models import Annotation, Candidate, DatasetSnapshot, Item
from feedback.services.projects import membership_set

from .conftest import annotate_project, shorter_first

pytestmark = pytest.mark.django_db


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def prompts_of(rows):
    return {json.dumps(r["prompt"], sort_keys=True) for r in rows}


@pytest.fixture
def ranked(project_factory, user_factory, make_item, settings, tmp_path):
    """40 ranking items (k=3) with one vote each: 3 pairs per item."""
    settings.EXPORTS_DIR = tmp_path / "exports"
    user = user_factory("ann")
    project = project_factory(name="Ranked", task_kind="ranking", responses_per_item=3)
    membership_set(project=project, user=user, role="annotator")
    for i in range(40):
        make_item(project, texts=[f"r{i}", f"resp {i}", f"a longer response {i}"])
    annotate_project(project, [user], lambda u, item, shown: {"ranking": shorter_first(shown)})
    return project, user


def all_files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_split_by_prompt_is_seeded_and_disjoint(ranked):
    project, _ = ranked
    spec = {"kind": "preference", "project_ids": [project.id]}
    snap = snapshot_create(name="split", spec=spec, seed=7, test_fraction=0.3)
    result = snapshot_write(snapshot=snap, formats=("jsonl",))
    train, test = read_jsonl(result.path / "train.jsonl"), read_jsonl(result.path / "test.jsonl")
    assert len(train) + len(test) == 120
    assert prompts_of(train).isdisjoint(prompts_of(test))
    assert 4 <= len(prompts_of(test)) <= 20  # ~12 of 40 prompts
    assert len(test) == 3 * len(prompts_of(test))  # every pair of a prompt goes with it
    assert result.stats["prompts"] == {"train": len(prompts_of(train)), "test": len(prompts_of(test))}
    # same seed → same split; another seed → another split
    again = snapshot_preview(spec=spec, seed=7, test_fraction=0.3)
    assert again.row_counts == result.row_counts
    other = snapshot_create(name="split2", spec=spec, seed=8, test_fraction=0.3)
    other_test = read_jsonl(snapshot_write(snapshot=other, formats=("jsonl",)).path / "test.jsonl")
    assert prompts_of(other_test) != prompts_of(test)


def test_re_export_is_byte_identical_in_every_format(ranked, tmp_path):
    project, user = ranked
    snap = snapshot_create(
        name="stable", spec={"kind": "preference", "project_ids": [project.id]}, seed=3, test_fraction=0.2
    )
    first = snapshot_write(snapshot=snap)
    files = all_files(first.path)
    assert {
        "train.jsonl",
        "test.jsonl",
        "train.parquet",
        "test.parquet",
        "manifest.json",
        "README.md",
    } <= set(files)
    assert "hf/train/data-00000-of-00001.arrow" in files and "hf/dataset_dict.json" in files
    second = snapshot_write(snapshot=DatasetSnapshot.objects.get(pk=snap.pk), out_dir=tmp_path / "copy")
    assert second.content_hash == first.content_hash
    assert all_files(tmp_path / "copy") == files
    manifest = json.loads(files["manifest.json"])
    assert manifest["content_hash"] == first.content_hash
    assert manifest["row_counts"] == first.row_counts
    assert manifest["snapshot_id"] == str(snap.pk) and manifest["kind"] == "preference"
    assert manifest["filters"]["project_ids"] == [project.id]
    assert b"license: other" in files["README.md"]

    # New annotations after the snapshot was made do not change it (the cut-off is frozen).
    from feedback.services.distribution import annotation_submit, item_next

    Item.objects.filter(project=project).update(annotations_required=2, is_open=True)
    other = type(user).objects.create_user(username="late", password="x")
    membership_set(project=project, user=other, role="annotator")
    lease = item_next(project=project, user=other)
    annotation_submit(
        user=other,
        item_id=lease.item_id,
        payload={"ranking": shorter_first(lease.candidates_shown)},
        idempotency_key="z",
    )
    third = snapshot_write(snapshot=DatasetSnapshot.objects.get(pk=snap.pk), out_dir=tmp_path / "copy2")
    assert all_files(tmp_path / "copy2") == files
    assert third.row_counts == first.row_counts


def test_hash_never_changes_once_written(ranked):
    project, _ = ranked
    snap = snapshot_create(name="frozen", spec={"kind": "preference", "project_ids": [project.id]})
    stale = DatasetSnapshot.objects.get(pk=snap.pk)  # loaded before the first write: no hash on it
    first = snapshot_write(snapshot=snap, formats=("jsonl",))
    before = all_files(first.path)
    Annotation.objects.filter(item__project=project).order_by("id").first().delete()
    with pytest.raises(SnapshotChangedError, match="was written with hash"):
        snapshot_write(snapshot=DatasetSnapshot.objects.get(pk=snap.pk), formats=("jsonl",))
    with pytest.raises(SnapshotChangedError, match="was written with hash"):
        snapshot_write(snapshot=stale, formats=("jsonl",))
    assert all_files(first.path) == before  # the files already written are left alone
    fresh = DatasetSnapshot.objects.get(pk=snap.pk)
    assert fresh.content_hash == first.content_hash and fresh.status == "written"
    # and the database itself refuses a second hash, whoever writes it
    from django.db import DatabaseError, transaction

    with pytest.raises(DatabaseError, match="never changes once written"), transaction.atomic():
        DatasetSnapshot.objects.filter(pk=snap.pk).update(content_hash="x" * 64)
    DatasetSnapshot.objects.filter(pk=snap.pk).update(name="renaming is fine")


def test_parquet_and_datasets_folder_hold_the_jsonl_rows(ranked):
    import pyarrow.parquet as pq
    from datasets import load_from_disk

    project, _ = ranked
    snap = snapshot_create(
        name="same rows",
        spec={"kind": "preference", "project_ids": [project.id], "include_sources": True, "ties": "keep"},
        test_fraction=0.25,
    )
    result = snapshot_write(snapshot=snap)
    hf = load_from_disk(str(result.path / "hf"))
    for split in ("train", "test"):
        rows = read_jsonl(result.path / f"{split}.jsonl")
        assert pq.read_table(result.path / f"{split}.parquet").to_pylist() == rows
        assert hf[split].to_list() == rows
    assert list(hf["train"].features) == [
        "prompt",
        "chosen",
        "rejected",
        "margin",
        "tie",
        "item_id",
        "chosen_id",
        "rejected_id",
        "votes",
        "agreement",
    ]


def test_gold_items_left_out_by_default(project_factory, user_factory, make_item, settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path
    user = user_factory()
    project = project_factory(name="Gold", task_kind="pairwise", gold_rate=1.0)
    membership_set(project=project, user=user, role="annotator")
    make_item(project, texts=["g1", "gold two"], is_gold=True, gold_payload={"choice": "A"})
    make_item(project, texts=["n1", "normal two"])
    annotate_project(project, [user], lambda u, item, shown: {"choice": "A"})
    assert Annotation.objects.filter(item__project=project).count() == 2
    spec = {"kind": "preference", "project_ids": [project.id]}
    assert snapshot_preview(spec=spec, test_fraction=0).row_counts["train"] == 1
    assert snapshot_preview(spec={**spec, "include_gold": True}, test_fraction=0).row_counts["train"] == 2


def test_truncated_candidates_left_out_by_default(ranked):
    project, _ = ranked
    # the longest answer of 5 items was cut off: each appears in 2 of its item's 3 pairs
    cut = list(
        Candidate.objects.filter(prompt__project=project, text__startswith="a longer").order_by("id")[:5]
    )
    Candidate.objects.filter(pk__in=[c.pk for c in cut]).update(finish_reason="length")
    spec = {"kind": "preference", "project_ids": [project.id]}
    preview = snapshot_preview(spec=spec, test_fraction=0)
    assert preview.row_counts["train"] == 120 - 10
    assert preview.stats["dropped"]["truncated"] == 10
    kept = snapshot_preview(spec={**spec, "include_truncated": True}, test_fraction=0)
    assert kept.row_counts["train"] == 120
    assert kept.columns[-2:] == ["chosen_truncated", "rejected_truncated"]


def test_model_version_and_date_filters(project_factory, user_factory, make_item, settings, tmp_path):
    from inference.models import Engine, ModelVersion

    settings.EXPORTS_DIR = tmp_path
    v1 = ModelVersion.objects.create(name="v1", engine=Engine.EXTERNAL)
    v2 = ModelVersion.objects.create(name="v2", engine=Engine.EXTERNAL)
    user = user_factory()
    project = project_factory(name="Versions", task_kind="pairwise")
    membership_set(project=project, user=user, role="annotator")
    make_item(project, texts=["a", "bb"], version=v1)
    make_item(project, texts=["c", "dd"], version=v2)
    mixed = make_item(project, texts=["e", "ff"], version=v1)
    Candidate.objects.filter(items=mixed, text="ff").update(model_version=v2)
    annotate_project(project, [user], lambda u, item, shown: {"choice": "A"})
    spec = {"kind": "preference", "project_ids": [project.id]}

    def n(**extra):
        return snapshot_preview(spec={**spec, **extra}, test_fraction=0).row_counts["train"]

    assert n() == 3
    assert n(model_version_ids=[v1.id]) == 1  # both sides must come from the chosen versions
    assert n(model_version_ids=[v1.id, v2.id]) == 3
    old = Annotation.objects.filter(item__project=project).order_by("id").first()
    Annotation.objects.filter(pk=old.pk).update(created_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert n(date_from="2021-01-01") == 2
    assert n(date_to="2020-01-01") == 1
    assert n(date_from="2019-12-31", date_to="2020-01-02T00:00:00") == 1


def test_bad_filters_are_reported_by_field():
    with pytest.raises(ExportSpecError, match="project_ids"):
        snapshot_preview(spec={"kind": "preference", "project_ids": []})
    with pytest.raises(ExportSpecError, match="min_agreement"):
        snapshot_preview(spec={"kind": "preference", "project_ids": [1], "min_agreement": 2})
    with pytest.raises(ExportSpecError, match="date_from"):
        snapshot_preview(spec={"kind": "preference", "project_ids": [1], "date_from": "yesterday"})
    with pytest.raises(ExportSpecError, match="unknown filter"):
        snapshot_preview(spec={"kind": "preference", "project_ids": [1], "colour": "red"})
    with pytest.raises(ExportSpecError, match="no project with id"):
        snapshot_preview(spec={"kind": "preference", "project_ids": [999999]})
    with pytest.raises(ExportSpecError, match="test_fraction"):
        snapshot_preview(spec={"kind": "preference", "project_ids": [1]}, test_fraction=1.5)


@pytest.mark.django_db(transaction=True)
def test_prefetch_thread_gives_the_same_bytes(
    project_factory, user_factory, make_item, settings, tmp_path, monkeypatch
):
    """Outside a transaction the next slice is fetched on a helper thread; the files must not change."""
    from django.db import connections

    import feedback.exports.reading as reading

    settings.EXPORTS_DIR = tmp_path / "exports"
    user = user_factory("pf")
    project = project_factory(name="Prefetch", task_kind="ranking", responses_per_item=3)
    membership_set(project=project, user=user, role="annotator")
    for i in range(30):
        make_item(project, texts=[f"q{i}", f"qq {i}", f"qqq qqq {i}"])
    annotate_project(project, [user], lambda u, item, shown: {"ranking": shorter_first(shown)})
    monkeypatch.setattr(reading.item_slices, "__kwdefaults__", {"items_per_query": 7})  # many small slices
    used_threads = []
    real = reading.SliceJoin.__call__

    def spy(self, batch):
        import threading

        used_threads.append(threading.current_thread().name)
        return real(self, batch)

    monkeypatch.setattr(reading.SliceJoin, "__call__", spy)
    out = {}
    for prefetch in (True, False):
        monkeypatch.setattr(reading, "PREFETCH", prefetch)
        snap = snapshot_create(
            name=f"pf {prefetch}", spec={"kind": "preference", "project_ids": [project.id]}, test_fraction=0.3
        )
        out[prefetch] = snapshot_write(snapshot=snap, formats=("jsonl",), out_dir=tmp_path / str(prefetch))
    assert sum(name.startswith("export-prefetch") for name in used_threads) == 5  # 30 items, 7 a slice
    assert out[True].content_hash == out[False].content_hash
    assert sum(out[True].row_counts.values()) == 90
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "True" / name).read_bytes() == (tmp_path / "False" / name).read_bytes()
    assert connections["default"].connection is not None  # the main connection is untouched


def test_datasets_features_match_the_library():
    from datasets import Features

    from feedback.exports.rows import ASSISTANT, BOOL, CANDIDATES, FLOAT, INT, MESSAGES, STRING
    from feedback.exports.writers import arrow_schema, datasets_features

    cols = [
        ("p", MESSAGES),
        ("a", ASSISTANT),
        ("s", STRING),
        ("f", FLOAT),
        ("b", BOOL),
        ("i", INT),
        ("c", CANDIDATES),
    ]
    assert datasets_features(cols) == Features.from_arrow_schema(arrow_schema(cols)).to_dict()
