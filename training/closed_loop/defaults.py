"""The loop's options and the recipe settings it trains with (Django-free).

Each setting below was chosen by runs on the demo model on 2-core CPUs; ``RUNS.md`` beside this file records
them, the failed ones included. The comments here give the run that decided each setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.recipes import modeling

PROMPTS_FILE = Path(__file__).with_name("prompts.jsonl")


@dataclass
class LoopOptions:
    tiny: bool = False
    rounds: int = 1
    preferences: tuple[str, ...] = ("shorter", "sentence")
    #: methods per preference; "ppo" means reward model then PPO
    methods: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"shorter": ("dpo", "kto", "ppo"), "sentence": ("dpo",), "reason": ("dpo",)}
    )
    #: methods that get a second round when rounds == 2
    round2_methods: tuple[str, ...] = ("dpo",)
    annotators: int = 4
    noise: float = 0.1
    candidates: int = 4
    max_new_tokens: int = 96
    temperature: float = 0.8
    train_prompts: int | None = None
    heldout_prompts: int | None = None
    seed: int = 0
    out_dir: Path = Path("closed_loop_out")
    model_path: str | None = None
    #: recipe overrides per method (merged over the defaults below)
    recipe_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_timeout_s: float = 3 * 3600
    threads: int = 2
    #: held-out answers per prompt and version: 1 = greedy; more = sampled at ``temperature``
    eval_samples: int = 1
    #: annotators who give their thumbs on each response (KTO's labels, merged by majority; at most ``annotators``).
    #: Thumbs-up answers are rare (~20 % of the pool), so one flipped thumb in ten lands there often: at seed 5, 32
    #: of 81 thumbs-up labels were flips with one vote, 12 of 68 with three (a label flips with odds ~3 %)
    thumb_votes: int = 3

    def methods_for(self, preference: str) -> tuple[str, ...]:
        return tuple(self.methods.get(preference, ()))


def recipe_defaults(method: str, *, tiny: bool, threads: int = 2) -> dict[str, Any]:
    """Recipe settings for one method of the loop (``dpo``, ``kto``, ``reward``, ``ppo``): LoRA r16 on the
    policies, one epoch; DPO with an SFT term on the chosen answers, KTO with one on the thumbs-up answers,
    the reward model trained in full (lr 3e-5) in batches of 4, PPO at a constant rate with KL 0.1; cut-off chosen answers
    dropped; bfloat16 autocast where the CPU multiplies it in hardware. ``tiny`` is the CI model's variant.
    Why each: the comments below, and the runs in ``training/closed_loop/RUNS.md``.
    """
    common: dict[str, Any] = {
        "device": "cpu",
        "torch_threads": threads,
        "save_steps": 1000,
        "logging_steps": 5,
        "lora_r": 16,
        "lora_alpha": 32,
        "max_length": 256,
        "seed": 0,
        # Cut-off answers are never trained as good ones; cut-off rejected answers stay as negatives.
        "drop_truncated": "chosen",
    }
    # The loop judges every version on held-out prompts itself: the recipes' own pass over the snapshot's
    # test split would only cost time (41 s for KTO on a fast machine; 26 s for the reward model, whose
    # accuracy the loop measures on those test prompts and the held-out ones, without label noise).
    no_final_eval = {"final_eval": False}
    if tiny:
        common.update(max_length=128, lora_r=8, lora_alpha=16)
    per_method: dict[str, dict[str, Any]] = {
        "dpo": {
            "beta": 0.1,
            "learning_rate": 2e-4,
            "num_train_epochs": 1.0,
            "loss_type": ["sigmoid", "sft"],
            "loss_weights": [1.0, 1.0],
            "per_device_train_batch_size": 8,
            **no_final_eval,
        },
        "kto": {
            "beta": 0.5,
            "learning_rate": 2e-4,
            "num_train_epochs": 1.0,
            "per_device_train_batch_size": 8,
            # 4, not 1: fewer answers looping at the token limit (offline on one thumbs snapshot, 2026-12-06:
            # 6/60 -> 3/60; in the loop that day, 1/60 in both runs, at 0.89 and 0.81)
            "sft_weight": 4.0,
            # The KL estimate (KTO's reference point) was 0 after clamping in every run above, so
            # the loss with the point fixed at 0 is the same, without its two passes per step.
            "loss_type": "apo_zero_unpaired",
            **no_final_eval,
        },
        "reward": {
            "learning_rate": 2e-4,
            "num_train_epochs": 1.0,
            "per_device_train_batch_size": 8,
            **no_final_eval,
        },
        "ppo": {
            "learning_rate": 2e-4,
            "value_learning_rate": 1e-5,  # the value model is trained in full, not through LoRA
            "per_device_train_batch_size": 16,
            "num_mini_batches": 2,
            "num_ppo_epochs": 2,
            "response_length": 64,
            "num_train_epochs": 2.0,
            "max_steps": 10,  # rollout batches of 16 (160 episodes, ~2 passes over the ~80 prompts)
            "kl_coef": 0.05,
            "missing_eos_penalty": 1.0,
            "eval_prompts": 0,
        },
    }
    if not tiny and modeling.cpu_has_native_bf16():
        # bfloat16 autocast where the CPU multiplies it in hardware (a DPO-sized step 2.1x faster; a PPO
        # rollout batch 41 s against 51 s in float32; the reward model's 30 steps 171 s against 259 s).
        # Rewards are scored in float32 whatever the policy runs in (scoring.py). The reward model was
        # left in float32 until 2026-12-06, after its training under autocast failed (2026-12-04: 0.65
        # on the snapshot's test pairs, PPO did not move): autocast's weight cache had kept every
        # forward pass on the starting weights (runtime.cpu_bf16_autocast). Without the cache, the same
        # snapshot trains to the same margins as in float32 and 0.857 held-out accuracy (float32 0.845).
        for settings in per_method.values():
            settings["bf16"] = True
    if tiny:
        # A 64-wide model: full fine-tuning (LoRA r=8 on it barely moves in a few dozen steps).
        # Plain DPO collapsed on one seed (both log-probs pushed down, answers that never stop):
        # an SFT term on the chosen answers keeps it anchored (0.28 -> 0.86 on that seed).
        per_method["dpo"].update(
            use_lora=False,
            learning_rate=5e-4,
            num_train_epochs=3.0,
            loss_type=["sigmoid", "sft"],
            loss_weights=[1.0, 1.0],
        )
        per_method["kto"].update(learning_rate=1e-3, num_train_epochs=3.0)
        per_method["reward"].update(learning_rate=1e-3, num_train_epochs=2.0)
        per_method["ppo"].update(response_length=16, learning_rate=1e-4, max_steps=-1)
    else:
        # The reward model at LoRA rank 32, not 16 (the seed-1 sweep above), in batches of 4, not 8 (twice the steps,
        # the same time): on the seed-2 loop's snapshot (262 pairs; 244 held-out), training seeds 0-5 (LoRA init,
        # head init, order) gave 0.898, 0.861, 0.840, 0.943, 0.877, 0.947 held-out accuracy (mean 0.894) against
        # 0.861, 0.853, 0.840, 0.889, 0.893, 0.820 (mean 0.859) in batches of 8; at lr 1e-4 0.820, 0.816, 0.844,
        # 0.869 (seeds 0-3).
        # Since 2026-12-06 the reward model trains all its weights (lr 3e-5, batches of 4), not a rank-32 LoRA
        # adapter: as long per run (~105 s against ~99 s here) and higher and steadier held-out accuracy. On the
        # seed-8 loop's snapshot (275 held-out pairs), training seeds 0-2: 0.836, 0.891, 0.862 against LoRA's
        # 0.807, 0.873, 0.800 (and 0.826, seed 3); on the seed-9 loop's (269 pairs): 0.885 (the loop's own run)
        # against LoRA's 0.892, 0.866, 0.796. Means 0.869 and 0.837; lowest 0.836 and 0.796.
        per_method["reward"].update(use_lora=False, learning_rate=3e-5, per_device_train_batch_size=4)
        # PPO at a constant learning rate, KL coefficient 0.1: with the linear decay, the policy took off only in
        # the last of its 10 rollout batches, when the rate had fallen to a fifth. On the seed-4 snapshot (its
        # reward model at 0.900), PPO seeds 0 and 1: 0.917 and 0.95 held-out, 0/60 empty or looping (26.3 and 18.0
        # words), against 0.85 and 0.875 (1/60 each; 41.4 and 28.8 words) linear; constant at KL 0.05: 0.90 and
        # 0.908, but 3/60 looping on seed 1 ('The answer is: "The answer is: …').
        per_method["ppo"].update(lr_scheduler_type="constant", kl_coef=0.1)
        # KTO at beta 0.1, not 0.5: with the SFT term anchoring the thumbs-up answers (sft_weight 4), the less
        # saturated loss keeps pushing the rambling thumbs-down answers down (their log-ratio -16 at the end
        # against -10). Seed 6's thumbs snapshot, offline: 0.883 held-out (1/60 degenerate, 4/60 cut off, 35.0
        # words) against 0.758 (1/60, 17/60 cut off, 50.4 words) at 0.5; the seed-7 loop with it: 0.908 (1/60, 22.5
        # words). Beta 0.5 dates from KTO without the SFT term, when every answer's likelihood fell.
        per_method["kto"].update(beta=0.1)
    return {**common, **per_method[method]}
