"""Every method trains end to end from a snapshot folder on a tiny random model, and its weights change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.recipes import recipe

from .conftest import base_config, write_snapshot


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    common = [k for k in a if k in b and a[k].shape == b[k].shape]
    assert common, "no shared tensors to compare"
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in common)


def _check_run(out: Path, result: dict, method: str) -> dict:
    final = out / "final"
    assert result["status"] == "succeeded" and Path(result["final_dir"]) == final.resolve()
    for name in ("model.safetensors", "tokenizer.json", "README.md", "arbiter.json"):
        assert (final / name).exists(), name
    card = json.loads((final / "arbiter.json").read_text())
    assert card["method"] == method and card["snapshot"]["snapshot_id"]
    assert card["snapshot"]["snapshot_id"] in (final / "README.md").read_text()
    progress = json.loads((out / "progress.json").read_text())
    assert (
        progress["status"] == "succeeded" and progress["step"] == progress["total_steps"] == result["steps"]
    )
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines and all("step" in x for x in lines)
    assert json.loads((out / "result.json").read_text())["final_dir"] == result["final_dir"]
    assert not list(out.glob(".final-tmp-*"))
    return lines


@pytest.mark.parametrize(
    "method,kind", [("dpo", "preference"), ("orpo", "preference"), ("sft", "sft"), ("kto", "unpaired")]
)
def test_policy_methods_train_and_change_weights(tmp_path, tiny_lm, method, kind):
    snap = write_snapshot(tmp_path / "snap", kind)
    mod = recipe(method)
    result = mod.run(mod.Config.from_dict(base_config(tiny_lm, snap, tmp_path / "out")))
    lines = _check_run(tmp_path / "out", result, method)
    assert any("loss" in x for x in lines)
    assert _changed(_weights(tiny_lm), _weights(tmp_path / "out" / "final")) > 0
    if method in ("dpo", "orpo"):
        assert "eval_rewards/accuracies" in result["eval"] and "eval_rewards/margins" in result["eval"]
    if method == "dpo":
        assert any("rewards/margins" in x for x in lines)
    if method == "kto":
        assert "eval_label_accuracy" in result["eval"] and "eval_kl" in result["eval"]
        assert isinstance(result["eval"]["eval_reward_margin"], float)
        assert any("kl" in x for x in lines)
    if method == "sft":
        assert result["eval"]["eval_perplexity"] > 1


def test_reward_then_ppo_pipeline(tmp_path, tiny_lm):
    snap = write_snapshot(tmp_path / "snap", "preference")
    reward = recipe("reward")
    rm = reward.run(reward.Config.from_dict(base_config(tiny_lm, snap, tmp_path / "rm")))
    _check_run(tmp_path / "rm", rm, "reward")
    assert 0 <= rm["eval"]["eval_accuracy"] <= 1 and "eval_margin" in rm["eval"]
    rm_dir = Path(rm["final_dir"])
    rm_config = json.loads((rm_dir / "config.json").read_text())
    assert (
        rm_config["architectures"] == ["LlamaForSequenceClassification"] and len(rm_config["id2label"]) == 1
    )
    assert _changed(_weights(tiny_lm), _weights(rm_dir)) > 0

    ppo = recipe("ppo")
    cfg = base_config(
        tiny_lm,
        snap,
        tmp_path / "ppo",
        reward_model_path=str(rm_dir),
        ref_model_name_or_path=str(tiny_lm),
        max_steps=2,
        response_length=8,
        num_ppo_epochs=1,
        learning_rate=1e-3,
        eval_prompts=4,
    )
    result = ppo.run(ppo.Config.from_dict(cfg))
    lines = _check_run(tmp_path / "ppo", result, "ppo")
    assert any("objective/kl" in x for x in lines) and any("objective/scores" in x for x in lines)
    assert {"eval_reward_policy", "eval_reward_reference", "eval_win_rate_vs_reference"} <= set(
        result["eval"]
    )
    assert _changed(_weights(tiny_lm), _weights(tmp_path / "ppo" / "final")) > 0


def test_cpt_cleans_dedupes_screens_and_packs(tmp_path, tiny_lm):
    docs = tmp_path / "docs"
    docs.mkdir()
    para = "Django is a web framework. Python is a programming language. " * 6
    (docs / "a.md").write_text("# Notes\n\n" + para + "\nMail me at jane.doe@example.com please.")
    (docs / "b.txt").write_text(
        "  # notes\n\n" + para.upper() + "\nMail me at jane.doe@example.com please.  "
    )  # a duplicate
    (docs / "c.jsonl").write_text(
        "".join(json.dumps({"text": f"Document {i}. " + para}) + "\n" for i in range(4))
        + json.dumps({"text": "tiny"})
        + "\n"
    )
    cpt = recipe("cpt")
    result = cpt.run(cpt.Config.from_dict(base_config(tiny_lm, docs, tmp_path / "out", max_length=32)))
    _check_run(tmp_path / "out", result, "cpt")
    report = result["documents"]
    assert report["documents"] == 7 and report["duplicates"] == 1 and report["too_short"] == 1
    assert report["pii_redacted"] == 1 and report["kept"] == 5
    assert result["blocks"]["train"] > 0 and "eval_perplexity" in result["eval"]
    assert _changed(_weights(tiny_lm), _weights(tmp_path / "out" / "final")) > 0


def test_dpo_under_accelerate_launch_with_two_processes(tiny_lm, tmp_path):
    """The same recipe under ``accelerate launch`` (2 data-parallel CPU processes, gloo): one final
    folder, written by the main process, and the metrics of every step."""
    import os
    import subprocess
    import sys

    import yaml

    snap = write_snapshot(tmp_path / "snap", "preference")
    cfg = base_config(tiny_lm, snap, tmp_path / "out", per_device_train_batch_size=2)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "training.recipes.dpo", "--config", str(tmp_path / "run.yaml")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    _check_run(tmp_path / "out", result, "dpo")
    assert _changed(_weights(tiny_lm), _weights(tmp_path / "out" / "final")) > 0


@pytest.mark.parametrize("method,kind", [("dpo", "preference"), ("kto", "unpaired")])
def test_final_eval_off_skips_the_test_split(tmp_path, tiny_lm, method, kind):
    snap = write_snapshot(tmp_path / "snap", kind)
    mod = recipe(method)
    cfg = mod.Config.from_dict({**base_config(tiny_lm, snap, tmp_path / "out"), "final_eval": False})
    result = mod.run(cfg)
    _check_run(tmp_path / "out", result, method)
    assert not result["eval"], result["eval"]
    assert not any(
        k.startswith("eval_")
        for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
        for k in json.loads(x)
    )
