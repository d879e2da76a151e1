"""ORPO (odds-ratio preference optimisation: SFT + preference in one loss, no reference model) from
a ``preference`` snapshot. In TRL 1.12 it lives in ``trl.experimental.orpo``.

Launch::

    python -m training.recipes.orpo --config training/configs/orpo.yaml
    accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml \
        -m training.recipes.orpo --config training/configs/orpo.yaml

Final evaluation: reward accuracy / margin and the log-odds ratio on the test split
(``eval_rewards/accuracies``, ``eval_rewards/margins``, ``eval_log_odds_ratio``).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from .config import PaddingFreeMixin, RecipeConfig, _field
from .modeling import ensure_distinct_pad, load_causal_lm, load_tokenizer, lora_config
from .packing import pack_trainer
from .runtime import RecipeRun


@dataclass
class Config(PaddingFreeMixin, RecipeConfig):
    METHOD: ClassVar[str] = "orpo"
    SNAPSHOT_KINDS: ClassVar[tuple[str, ...]] = ("preference",)
    DEFAULT_LR: ClassVar[float] = 1e-4

    beta: float = _field(0.1, "Weight of the odds-ratio term against the SFT term (lambda in the paper).")
    max_completion_length: int | None = _field(
        None, "Cap on completion tokens (None = whatever fits in max_length)."
    )

    def validate(self, problems: list[tuple[str, str]]) -> None:
        super().validate(problems)
        if self.beta <= 0:
            problems.append(("beta", "must be > 0"))
        if self.max_completion_length is not None and not 1 <= self.max_completion_length < self.max_length:
            problems.append(("max_completion_length", "must be in [1, max_length)"))


def run(cfg: Config) -> dict[str, Any]:
    from datasets import Dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" notice
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    with RecipeRun(cfg) as rr:
        snap = rr.load_snapshot()
        tok = load_tokenizer(cfg.model_name_or_path)
        ensure_distinct_pad(tok)
        model = load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)
        args = ORPOConfig(
            **rr.trainer_kwargs(),
            beta=cfg.beta,
            max_length=cfg.max_length,
            max_completion_length=cfg.max_completion_length,
            remove_unused_columns=False,
        )
        trainer = ORPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(snap.train),
            eval_dataset=Dataset.from_list(snap.test) if snap.test else None,
            processing_class=tok,
            peft_config=lora_config(cfg, "CAUSAL_LM"),
            callbacks=[rr.callback()],
        )
        if cfg.padding_free:
            pack_trainer(trainer, capacity=cfg.max_length)
        metrics = rr.train(trainer, evaluate=bool(snap.test))
        return rr.finish(
            trainer=trainer,
            tokenizer=tok,
            eval_metrics=metrics,
            merge_loader=lambda: load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok),
        )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(Config, run))
