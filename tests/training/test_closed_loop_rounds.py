"""The closed loop's DPO settings: every round trains with the guard against collapse (one epoch, an SFT term
on the chosen answers), the merged settings are a valid DPO config, and what the user sets with ``--set``
still wins."""

from __future__ import annotations

from training.closed_loop.defaults import recipe_defaults
from training.recipes import recipe


def _config(method: str, *, tiny: bool = False, **overrides):
    """The loop's settings for ``method`` (with overrides, as ``--set`` gives them) as a validated recipe config."""
    return recipe(method).Config.from_dict(
        {
            **recipe_defaults(method, tiny=tiny),
            **overrides,
            "model_name_or_path": "/models/base",
            "snapshot_dir": "/snapshots/1",
            "output_dir": "/runs/1",
        }
    )


def test_dpo_trains_one_epoch_with_the_sft_term():
    cfg = _config("dpo")
    assert list(cfg.loss_type) == ["sigmoid", "sft"] and list(cfg.loss_weights) == [1.0, 1.0]
    assert cfg.num_train_epochs == 1.0 and cfg.beta == 0.1


def test_user_settings_win_over_the_defaults():
    cfg = _config("dpo", num_train_epochs=2.0, loss_type=["sigmoid"], loss_weights=None)
    assert list(cfg.loss_type) == ["sigmoid"] and cfg.num_train_epochs == 2.0


def test_kto_defaults_fix_the_reference_point_and_are_a_valid_config():
    cfg = _config("kto")
    assert cfg.loss_type == "apo_zero_unpaired" and cfg.sft_weight == 4.0


def test_the_demo_kto_runs_at_beta_0_1_and_the_tiny_one_at_0_5():
    assert (_config("kto").beta, _config("kto", tiny=True).beta) == (0.1, 0.5)


def test_bf16_for_every_method_only_where_the_cpu_has_it(monkeypatch):
    from training.recipes import modeling

    for native in (True, False):
        monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda native=native: native)
        got = {m: recipe_defaults(m, tiny=False).get("bf16", False) for m in ("dpo", "kto", "reward", "ppo")}
        assert got == {"dpo": native, "kto": native, "reward": native, "ppo": native}
        assert not any(recipe_defaults(m, tiny=True).get("bf16", False) for m in got)


def test_the_demo_reward_model_trains_in_full_in_batches_of_4_and_the_tiny_one_through_lora_rank_8():
    demo, tiny = _config("reward"), _config("reward", tiny=True)
    assert (demo.use_lora, demo.learning_rate, demo.per_device_train_batch_size) == (False, 3e-5, 4)
    assert (tiny.use_lora, tiny.lora_r, tiny.lora_alpha, tiny.per_device_train_batch_size) == (True, 8, 16, 8)
    assert recipe_defaults("dpo", tiny=False)["lora_r"] == 16  # the policies keep rank 16


def test_the_demo_ppo_keeps_a_constant_learning_rate_at_kl_0_1_and_the_tiny_one_decays():
    demo = _config("ppo", reward_model_path="/runs/0/final")
    tiny = _config("ppo", tiny=True, reward_model_path="/runs/0/final")
    assert (demo.lr_scheduler_type, demo.kl_coef, demo.max_steps) == ("constant", 0.1, 10)
    assert (tiny.lr_scheduler_type, tiny.kl_coef) == ("linear", 0.05)
