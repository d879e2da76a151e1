"""Reward model (one-logit sequence-classification head, TRL RewardTrainer) from a ``preference``
snapshot. Its final/ folder is what a PPO run's ``reward_model_path`` points at, and what active
selection scores candidates with.

Launch::

    python -m training.recipes.reward --config training/configs/reward.yaml
    accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml \
        -m training.recipes.reward --config training/configs/reward.yaml

Final evaluation: pairwise accuracy (chosen scored above rejected) and mean margin on the test
split (``eval_accuracy``, ``eval_margin``). Final weights are always merged (a reward model is
loaded as a plain sequence classifier by PPO and active selection).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from .config import PaddingFreeMixin, RecipeConfig, _field
from .modeling import ensure_distinct_pad, load_sequence_classifier, load_tokenizer, lora_config
from .packing import pack_trainer
from .runtime import RecipeRun


@dataclass
class Config(PaddingFreeMixin, RecipeConfig):
    METHOD: ClassVar[str] = "reward"
    SNAPSHOT_KINDS: ClassVar[tuple[str, ...]] = ("preference",)
    DEFAULT_LR: ClassVar[float] = 1e-4

    use_margin: bool = _field(
        True, "Use the snapshot's optional 'margin' column (how strongly chosen beat rejected) in the loss."
    )
    center_rewards_coefficient: float | None = _field(
        0.01, "Pull mean rewards toward zero (keeps PPO's reward scale sane); None disables."
    )

    def validate(self, problems: list[tuple[str, str]]) -> None:
        super().validate(problems)
        if self.save_mode != "merged":
            problems.append(("save_mode", "reward models are always saved merged"))
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            problems.append(("center_rewards_coefficient", "must be >= 0 or null"))


def run(cfg: Config) -> dict[str, Any]:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    with RecipeRun(cfg) as rr:
        snap = rr.load_snapshot(keep_optional=("margin",) if cfg.use_margin else ())
        tok = load_tokenizer(cfg.model_name_or_path)
        ensure_distinct_pad(tok)
        model = load_sequence_classifier(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)

        def rows(split: list[dict]) -> list[dict]:
            # A margin column must be present on every row or none (collation needs a tensor).
            if cfg.use_margin and split and all("margin" in r for r in split):
                return [{**r, "margin": float(r["margin"])} for r in split]
            return [{k: v for k, v in r.items() if k != "margin"} for r in split]

        args = RewardConfig(
            **rr.trainer_kwargs(),
            max_length=cfg.max_length,
            center_rewards_coefficient=cfg.center_rewards_coefficient,
        )
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows(snap.train)),
            eval_dataset=Dataset.from_list(rows(snap.test)) if snap.test else None,
            processing_class=tok,
            peft_config=lora_config(cfg, "SEQ_CLS"),
            callbacks=[rr.callback()],
        )
        if cfg.padding_free:
            pack_trainer(trainer, capacity=cfg.max_length)
        # evaluated in float32, as the reward model scores answers (scoring.py)
        metrics = rr.train(trainer, evaluate=bool(snap.test), eval_autocast=False)
        return rr.finish(
            trainer=trainer,
            tokenizer=tok,
            eval_metrics=metrics,
            merge_loader=lambda: load_sequence_classifier(cfg.model_name_or_path, cfg=cfg, tokenizer=tok),
        )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(Config, run))
