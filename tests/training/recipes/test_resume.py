"""Checkpoints hold config + step; a run killed after a checkpoint resumes from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.recipes import recipe
from training.recipes.config import ConfigError
from training.recipes.runtime import CHECKPOINT_META

from .conftest import base_config, write_snapshot


def _simulate_kill_after(out: Path, step: int) -> None:
    """Leave the folder as a worker killed just after checkpoint ``step`` would: no final/, later
    checkpoints gone (or half-written), metrics past the checkpoint present."""
    shutil.rmtree(out / "final")
    (out / "result.json").unlink()
    for ck in (out / "checkpoints").glob("checkpoint-*"):
        if int(ck.name.split("-")[1]) > step:
            shutil.rmtree(ck)
    half = out / "checkpoints" / f"checkpoint-{step + 2}"  # a save cut off mid-way: no meta file
    half.mkdir()
    (half / "trainer_state.json").write_text("{}")


def test_dpo_resume_matches_uninterrupted_run(tmp_path, tiny_lm):
    snap = write_snapshot(tmp_path / "snap", "preference", train=16)
    dpo = recipe("dpo")
    cfg = dict(max_steps=4, save_steps=2, save_total_limit=5)
    full = dpo.run(dpo.Config.from_dict(base_config(tiny_lm, snap, tmp_path / "a", **cfg)))

    out = tmp_path / "b"
    dpo.run(dpo.Config.from_dict(base_config(tiny_lm, snap, out, **cfg)))
    meta = json.loads((out / "checkpoints" / "checkpoint-2" / CHECKPOINT_META).read_text())
    assert meta["step"] == 2 and meta["method"] == "dpo" and meta["config"]["beta"] == 0.1
    _simulate_kill_after(out, 2)

    resumed = dpo.run(dpo.Config.from_dict(base_config(tiny_lm, snap, out, **cfg)))
    assert resumed["steps"] == 4
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if "loss" in x]
    assert steps == [1, 2, 3, 4]  # lines past the checkpoint were rewritten, not duplicated
    a, b = (
        load_file(full["final_dir"] + "/model.safetensors"),
        load_file(resumed["final_dir"] + "/model.safetensors"),
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_resume_refuses_a_different_config(tmp_path, tiny_lm):
    snap = write_snapshot(tmp_path / "snap", "preference")
    dpo = recipe("dpo")
    out = tmp_path / "out"
    dpo.run(dpo.Config.from_dict(base_config(tiny_lm, snap, out, max_steps=2, save_steps=1)))
    with pytest.raises(ConfigError, match="different config"):
        dpo.run(dpo.Config.from_dict(base_config(tiny_lm, snap, out, max_steps=2, save_steps=1, beta=0.5)))
    # resume: false starts over instead
    again = dpo.run(
        dpo.Config.from_dict(
            base_config(tiny_lm, snap, out, max_steps=2, save_steps=1, beta=0.5, resume=False)
        )
    )
    assert again["status"] == "succeeded"


def test_ppo_resumes_with_its_value_model(tmp_path, tiny_lm):
    snap = write_snapshot(tmp_path / "snap", "preference", train=16)
    reward = recipe("reward")
    rm = reward.run(reward.Config.from_dict(base_config(tiny_lm, snap, tmp_path / "rm", max_steps=2)))
    ppo = recipe("ppo")
    cfg = base_config(
        tiny_lm,
        snap,
        tmp_path / "ppo",
        reward_model_path=rm["final_dir"],
        max_steps=3,
        save_steps=1,
        save_total_limit=5,
        response_length=6,
        num_ppo_epochs=1,
        eval_prompts=2,
        value_learning_rate=1e-4,
    )
    ppo.run(ppo.Config.from_dict(cfg))
    out = tmp_path / "ppo"
    ck1 = out / "checkpoints" / "checkpoint-1"
    assert (ck1 / "value_model.safetensors").exists() and (ck1 / CHECKPOINT_META).exists()
    # the policy's LoRA weights at learning_rate, the fully trained value model at its own rate
    groups = torch.load(ck1 / "optimizer.pt", weights_only=True)["param_groups"]
    assert {g["initial_lr"] for g in groups} == {5e-3, 1e-4}
    _simulate_kill_after(out, 1)
    result = ppo.run(ppo.Config.from_dict(cfg))
    assert result["steps"] == 3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "objective/kl" in x] == [1, 2, 3]
    assert (out / "checkpoints" / "checkpoint-3" / CHECKPOINT_META).exists()
