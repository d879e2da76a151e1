"""The closed loop's recipe settings per round: a later DPO round trains with the guard against collapse
(one epoch, an SFT term on the chosen answers), the merged settings are a valid DPO config, and what the user
sets with ``--set`` still wins."""

from __future__ import annotations

from training.closed_loop.loop import recipe_defaults, round_adjustments
from training.recipes.dpo import Config as DPOConfig


def _dpo(round_no: int, **overrides):
    return {
        **recipe_defaults("dpo", tiny=False),
        **round_adjustments("dpo", round_no, tiny=False),
        **overrides,
        "model_name_or_path": "/models/base",
        "snapshot_dir": "/snapshots/1",
        "output_dir": "/runs/1",
    }


def test_round_one_keeps_plain_dpo_and_round_two_adds_the_sft_term():
    first = DPOConfig.from_dict(_dpo(1))
    second = DPOConfig.from_dict(_dpo(2))
    assert list(first.loss_type) == ["sigmoid"] and first.num_train_epochs == 2.0
    assert list(second.loss_type) == ["sigmoid", "sft"] and list(second.loss_weights) == [1.0, 1.0]
    assert second.num_train_epochs == 1.0
    assert round_adjustments("kto", 2, tiny=False) == {} and round_adjustments("dpo", 2, tiny=True) == {}


def test_user_settings_win_over_the_round_adjustments():
    cfg = DPOConfig.from_dict(_dpo(2, num_train_epochs=2.0, loss_type=["sigmoid"], loss_weights=None))
    assert list(cfg.loss_type) == ["sigmoid"] and cfg.num_train_epochs == 2.0
