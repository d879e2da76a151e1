"""The closed loop's DPO settings: every round trains with the guard against collapse (one epoch, an SFT term
on the chosen answers), the merged settings are a valid DPO config, and what the user sets with ``--set``
still wins."""

from __future__ import annotations

from training.closed_loop.loop import recipe_defaults
from training.recipes.dpo import Config as DPOConfig


def _dpo(**overrides):
    return {
        **recipe_defaults("dpo", tiny=False),
        **overrides,
        "model_name_or_path": "/models/base",
        "snapshot_dir": "/snapshots/1",
        "output_dir": "/runs/1",
    }


def test_dpo_trains_one_epoch_with_the_sft_term():
    cfg = DPOConfig.from_dict(_dpo())
    assert list(cfg.loss_type) == ["sigmoid", "sft"] and list(cfg.loss_weights) == [1.0, 1.0]
    assert cfg.num_train_epochs == 1.0 and cfg.beta == 0.1


def test_user_settings_win_over_the_defaults():
    cfg = DPOConfig.from_dict(_dpo(num_train_epochs=2.0, loss_type=["sigmoid"], loss_weights=None))
    assert list(cfg.loss_type) == ["sigmoid"] and cfg.num_train_epochs == 2.0
