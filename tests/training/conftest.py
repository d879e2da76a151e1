"""Training app fixtures: a tiny model registered as a version, real labels made through the
distribution services, and snapshots written by the exports service."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

_keys = itertools.count(1)
WORDS = "the quick brown fox jumps over lazy dog python django answer because clear".split()


@pytest.fixture
def training_dirs(settings, tmp_path):
    settings.RUNS_DIR = tmp_path / "runs"
    settings.EXPORTS_DIR = tmp_path / "exports"
    settings.TRAINING_POLL_S = 0.2
    settings.TRAINING_TORCH_THREADS = 1
    return tmp_path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from inference.engines.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("tiny-base")
    build_tiny_model(path, seed=0)
    return path


@pytest.fixture
def base_version(db, tiny_model_dir):
    from inference.models import Engine, ModelVersion

    return ModelVersion.objects.create(
        name="tiny-base", base_model=str(tiny_model_dir), engine=Engine.TRANSFORMERS
    )


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _prompts_with_candidates(project, version, n_prompts: int, k: int, seed: int = 0):
    from feedback import pii
    from feedback.models import Candidate, Prompt
    from feedback.services.items import items_build

    rng = random.Random(seed)
    for i in range(n_prompts):
        messages = [{"role": "user", "content": f"Question {i}: {_text(rng, 4)}?"}]
        prompt = Prompt.objects.create(
            project=project,
            messages=messages,
            text=messages[0]["content"],
            content_hash=pii.messages_hash(messages),
        )
        for j in range(k):
            text = _text(rng, 2 + 5 * j)  # candidate j is longer than j-1
            Candidate.objects.create(
                prompt=prompt, model_version=version, text=text, text_hash=pii.text_hash(text)
            )
    items_build(project=project)


def _annotate(project, user, decide, demonstration=None) -> int:
    from feedback.services.distribution import annotation_submit, item_next

    done = 0
    while (lease := item_next(project=project, user=user)) is not None:
        shown = lease.candidates_shown
        annotation_submit(
            user=user,
            item_id=lease.item_id,
            payload=decide(shown),
            idempotency_key=f"t{next(_keys)}",
            demonstration=demonstration(shown) if demonstration else "",
        )
        done += 1
    return done


@pytest.fixture
def labelled(db, base_version, project_factory, user_factory, training_dirs):
    """make(kind) → a written snapshot of real labels: shorter answers win / get thumbs up / are demos."""
    from feedback.exports.services import snapshot_create, snapshot_write

    def make(kind: str, *, n_prompts: int = 16, annotate: bool = True):
        task = {"preference": "pairwise", "unpaired": "binary", "sft": "pairwise"}[kind]
        project = project_factory(task_kind=task)
        _prompts_with_candidates(project, base_version, n_prompts, 1 if task == "binary" else 2)
        user = user_factory()
        if annotate:
            if task == "pairwise":

                def decide(shown):
                    a, b = shown
                    return {"choice": "A" if len(a.text) <= len(b.text) else "B"}

                demo = (
                    (lambda shown: min(shown, key=lambda c: len(c.text)).text + " indeed")
                    if kind == "sft"
                    else None
                )
                _annotate(project, user, decide, demo)
            else:
                _annotate(
                    project,
                    user,
                    lambda shown: {"labels": {str(c.id): "up" if c.id % 2 else "down" for c in shown}},
                )
        snap = snapshot_create(
            name=f"{kind} snapshot", spec={"kind": kind, "project_ids": [project.id]}, test_fraction=0.25
        )
        snapshot_write(snapshot=snap, formats=("jsonl",))
        return project, snap

    return make


@pytest.fixture
def annotate_more():
    return _annotate
