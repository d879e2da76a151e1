"""KTO and DPO train a cut-off completion (one that hit the token limit) as the unfinished prefix it
is: without the end-of-turn token that chat formatting appends, so a thumbs-down on (or a preference
against) a rambling answer does not also teach the model never to stop after that much text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from training.recipes import recipe
from training.recipes.kto import cut_off_as_prefix

from .conftest import base_config, write_snapshot


def _flag_cut_off(snapshot: Path) -> None:
    """Mark every other thumbs-down training row as cut off (the exports' completion_truncated)."""
    path = snapshot / "train.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    downs = [r for r in rows if not r["label"]]
    for r in downs[::2]:
        r["completion_truncated"] = True
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _trained_rows(
    monkeypatch, tmp_path: Path, tiny_lm: Path, snap: Path, method: str = "kto", **kw
) -> tuple[list[dict], dict]:
    """The rows the method's trainer was handed at train() time, after the recipe prepared them."""
    import trl

    seen: list[dict] = []
    name = {"kto": "KTOTrainer", "dpo": "DPOTrainer"}[method]

    class Recording(getattr(trl, name)):
        def train(self, *args, **kwargs):
            seen.extend(self.train_dataset.to_list())
            return super().train(*args, **kwargs)

    monkeypatch.setattr(trl, name, Recording)
    cfg = base_config(tiny_lm, snap, tmp_path / "out", max_steps=1, final_eval=False, **kw)
    summary = recipe(method).run(recipe(method).Config.from_dict(cfg))
    return seen, summary


@pytest.mark.parametrize("as_prefix", [True, False])
def test_cut_off_completions_lose_their_end_of_turn(monkeypatch, tmp_path, tiny_lm, as_prefix):
    snap = write_snapshot(tmp_path / "snap", "unpaired", train=16)
    _flag_cut_off(snap)
    rows = [json.loads(x) for x in (snap / "train.jsonl").read_text().splitlines()]
    cut = {json.dumps(r["prompt"]) for r in rows if r.get("completion_truncated")}
    assert len(cut) == 4
    tok = AutoTokenizer.from_pretrained(tiny_lm)

    seen, summary = _trained_rows(
        monkeypatch, tmp_path, tiny_lm, snap, drop_truncated="chosen", cut_off_as_prefix=as_prefix
    )

    assert len(seen) == 16
    ends = {}
    for r in seen:
        ends[json.dumps(r["prompt"])] = tok.eos_token_id in r["completion_ids"]
        assert "cut_off" not in r  # the recipe's own column does not reach the collator
    finished = [ends[k] for k in ends if k not in cut]
    assert all(finished), "a finished completion keeps its end-of-turn token"
    assert [ends[k] for k in cut] == [not as_prefix] * 4
    assert summary["cut_off_rows"] == (4 if as_prefix else 0)


def test_cut_off_as_prefix_keeps_the_completion_up_to_its_last_end_of_turn(tiny_lm):
    from datasets import Dataset

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    eos = tok.eos_token_id
    ds = Dataset.from_list(
        [
            {"completion_ids": [5, 6, eos, 7], "cut_off": True, "label": False},
            {"completion_ids": [5, eos, 6, eos, 7], "cut_off": True, "label": False},
            {"completion_ids": [5, 6, eos, 7], "cut_off": False, "label": False},
            {"completion_ids": [5, 6], "cut_off": True, "label": False},  # nothing to strip
        ]
    )
    got = cut_off_as_prefix(ds, eos_token_id=eos)
    assert got.column_names == ["completion_ids", "label"]
    assert [r["completion_ids"] for r in got] == [[5, 6], [5, eos, 6], [5, 6, eos, 7], [5, 6]]


@pytest.mark.parametrize("as_prefix", [True, False])
def test_dpo_cut_off_rejected_answers_lose_their_end_of_turn(monkeypatch, tmp_path, tiny_lm, as_prefix):
    snap = write_snapshot(tmp_path / "snap", "preference", train=12)
    path = snap / "train.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows[::3]:
        r["rejected_truncated"] = True
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cut = {json.dumps(r["prompt"]) for r in rows if r.get("rejected_truncated")}
    assert len(cut) == 4
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    eos = tok.eos_token_id

    seen, summary = _trained_rows(
        monkeypatch,
        tmp_path,
        tiny_lm,
        snap,
        method="dpo",
        drop_truncated="chosen",
        cut_off_as_prefix=as_prefix,
    )

    assert len(seen) == 12
    for r in seen:
        assert not any(k.endswith(("_cut_off", "_truncated")) for k in r)  # only TRL's columns go on
        assert eos in r["chosen_ids"], "a finished chosen answer keeps its end-of-turn token"
    ended = {tuple(r["prompt_ids"]): eos in r["rejected_ids"] for r in seen}
    stripped = sum(not e for e in ended.values())
    assert stripped == (4 if as_prefix else 0)
    assert summary["cut_off_rows"] == {"chosen": 0, "rejected": 4 if as_prefix else 0}


def test_dpo_cut_off_as_prefix_strips_each_flagged_side(tiny_lm):
    from datasets import Dataset

    from training.recipes.dpo import cut_off_as_prefix as dpo_cut_off_as_prefix

    eos = AutoTokenizer.from_pretrained(tiny_lm).eos_token_id
    ds = Dataset.from_list(
        [
            {
                "prompt_ids": [1],
                "chosen_ids": [5, eos, 9],
                "rejected_ids": [6, 7, eos, 9],
                "chosen_cut_off": False,
                "rejected_cut_off": True,
            },
            {
                "prompt_ids": [2],
                "chosen_ids": [5, eos, 9],
                "rejected_ids": [6, eos, 9],
                "chosen_cut_off": True,
                "rejected_cut_off": False,
            },
        ]
    )
    got = dpo_cut_off_as_prefix(ds, eos_token_id=eos)
    assert got.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]
    assert [(r["chosen_ids"], r["rejected_ids"]) for r in got] == [
        ([5, eos, 9], [6, 7]),
        ([5], [6, eos, 9]),
    ]


def test_dpo_refuses_precomputed_reference_with_cut_off_prefixes(tmp_path, tiny_lm):
    from training.recipes.config import ConfigError

    snap = write_snapshot(tmp_path / "snap", "preference")
    cfg = base_config(tiny_lm, snap, tmp_path / "out", precompute_ref_log_probs=True)
    with pytest.raises(ConfigError, match="precompute_ref_log_probs"):
        recipe("dpo").Config.from_dict(cfg)
    recipe("dpo").Config.from_dict({**cfg, "cut_off_as_prefix": False})
