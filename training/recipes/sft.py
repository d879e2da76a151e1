"""Supervised fine-tuning on demonstrations: an ``sft`` snapshot (prompt / completion), loss on
the completion tokens only.

Launch::

    python -m training.recipes.sft --config training/configs/sft.yaml
    accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml \
        -m training.recipes.sft --config training/configs/sft.yaml

Final evaluation: completion loss and perplexity on the test split (``eval_loss``,
``eval_perplexity``, ``eval_mean_token_accuracy``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from .config import RecipeConfig, _field
from .modeling import ensure_distinct_pad, load_causal_lm, load_tokenizer, lora_config
from .runtime import RecipeRun


@dataclass
class Config(RecipeConfig):
    METHOD: ClassVar[str] = "sft"
    SNAPSHOT_KINDS: ClassVar[tuple[str, ...]] = ("sft",)
    DEFAULT_LR: ClassVar[float] = 2e-4

    completion_only_loss: bool = _field(True, "Train on the completion tokens only (not the prompt).")

    def validate(self, problems: list[tuple[str, str]]) -> None:
        super().validate(problems)


def run(cfg: Config) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    with RecipeRun(cfg) as rr:
        snap = rr.load_snapshot()
        tok = load_tokenizer(cfg.model_name_or_path)
        ensure_distinct_pad(tok)
        model = load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)
        args = SFTConfig(
            **rr.trainer_kwargs(),
            max_length=cfg.max_length,
            completion_only_loss=cfg.completion_only_loss,
            packing=False,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(snap.train),
            eval_dataset=Dataset.from_list(snap.test) if snap.test else None,
            processing_class=tok,
            peft_config=lora_config(cfg, "CAUSAL_LM"),
            callbacks=[rr.callback()],
        )
        metrics = rr.train(trainer, evaluate=bool(snap.test))
        if "eval_loss" in metrics:
            metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
        return rr.finish(
            trainer=trainer,
            tokenizer=tok,
            eval_metrics=metrics,
            merge_loader=lambda: load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok),
        )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(Config, run))
