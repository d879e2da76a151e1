"""Fixtures for the recipe tests: tiny random models and snapshot folders written on disk."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

WORDS = "the quick brown fox jumps over lazy dog python django answer short long because".split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _msgs(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def write_snapshot(
    folder: Path,
    kind: str,
    *,
    train: int = 12,
    test: int = 6,
    seed: int = 0,
    extra_rows: list[dict] | None = None,
) -> Path:
    """A snapshot folder in the exports helper's format, with short-vs-long answers."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def row(i: int) -> dict:
        prompt = _msgs("user", f"question {i}: " + _text(rng, 4))
        short, long = _text(rng, 2), _text(rng, 9)
        if kind == "preference":
            return {
                "prompt": prompt,
                "chosen": _msgs("assistant", short),
                "rejected": _msgs("assistant", long),
                "margin": 1.0,
                "pair_id": i,
            }
        if kind == "unpaired":
            good = i % 2 == 0
            return {
                "prompt": prompt,
                "completion": _msgs("assistant", short if good else long),
                "label": good,
            }
        if kind == "sft":
            return {"prompt": prompt, "completion": _msgs("assistant", short)}
        raise ValueError(kind)

    splits = {
        "train": [row(i) for i in range(train)] + list(extra_rows or []),
        "test": [row(1000 + i) for i in range(test)],
    }
    for name, rows in splits.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {
        "snapshot_id": f"snap-{kind}-{seed}",
        "kind": kind,
        "content_hash": f"hash-{kind}-{seed}-{len(splits['train'])}",
        "row_counts": {k: len(v) for k, v in splits.items()},
        "filters": {"project": "test"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    from inference.engines.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("tiny-lm")
    build_tiny_model(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_lm_pad_is_eos(tmp_path_factory) -> Path:
    """Like the demo model (SmolLM2): pad token == EOS token."""
    from inference.engines.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("tiny-lm-pad-eos")
    model, tok = build_tiny_model(None, seed=0)
    tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def base_config(model: Path, snapshot: Path, out: Path, **kw) -> dict:
    cfg = {
        "model_name_or_path": str(model),
        "snapshot_dir": str(snapshot),
        "output_dir": str(out),
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 5e-3,
        "max_length": 64,
        "lora_r": 4,
        "lora_alpha": 8,
        "save_steps": 2,
        "device": "cpu",
        "torch_threads": 1,
    }
    cfg.update(kw)
    return cfg
