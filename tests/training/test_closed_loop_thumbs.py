"""The closed loop's thumbs (KTO's labels): each response gets the thumbs of ``thumb_votes`` distinct annotators,
and the snapshot keeps one label per response, the majority's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from feedback.importing import CandidateRow
from feedback.services.distribution import annotation_submit, item_next
from feedback.services.imports import candidates_import
from training.closed_loop import steps
from training.closed_loop.__main__ import options_from_args, parse_args
from training.closed_loop.annotator import Account
from training.closed_loop.defaults import LoopOptions

pytestmark = pytest.mark.django_db


def test_three_votes_per_thumbs_item_by_default():
    assert options_from_args(parse_args(["--tiny"])).thumb_votes == 3
    assert options_from_args(parse_args(["--tiny", "--thumb-votes", "1"])).thumb_votes == 1


def test_thumbs_from_three_annotators_are_exported_as_the_majority(settings, tmp_path: Path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    users = get_user_model().objects
    admin = users.create_superuser(username="loop-admin", password="pw", email="")
    accounts = [Account(f"annotator{i}", "pw") for i in range(3)]
    annotators = [users.create_user(username=a.username, password="pw") for a in accounts]
    ctx = steps.Context(
        options=LoopOptions(),
        base_url="",
        admin=admin,
        admin_api=None,  # type: ignore[arg-type]  # no prompts to import through the API
        accounts=accounts,
        base=None,
        check=lambda: None,
    )
    project = steps.make_project(ctx, "thumbs", "binary", 1, [], "shorter wins", votes=3)
    assert project.annotations_required == 3
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    texts = ["Scattering.", "Because of Rayleigh scattering of sunlight in the air, blue the most."]
    candidates_import(
        project=project,
        rows=[CandidateRow(f"row {i}", messages, t, "base", "stop") for i, t in enumerate(texts)],
        model_name=None,
        source="test",
        file_format="jsonl",
        created_by=admin,
    )
    # short answer: up, up, down -> up; long answer: down, up, down -> down
    votes = {texts[0]: ["up", "up", "down"], texts[1]: ["down", "up", "down"]}
    for i, user in enumerate(annotators):
        while (lease := item_next(project=project, user=user)) is not None:
            (cand,) = lease.candidates_shown
            annotation_submit(
                user=user,
                item_id=lease.item_id,
                payload={"labels": {str(cand.pk): votes[cand.text][i]}},
                idempotency_key=f"{user.pk}-{lease.item_id}",
            )
    assert item_next(project=project, user=users.create_user(username="late", password="pw")) is None

    snapshot = steps.export(ctx, project, "unpaired", "thumbs", test_fraction=0.0, aggregation="majority")
    rows = [json.loads(line) for line in (Path(snapshot.path) / "train.jsonl").read_text().splitlines()]
    labels = {row["completion"][-1]["content"]: row["label"] for row in rows}
    assert labels == {texts[0]: True, texts[1]: False}
