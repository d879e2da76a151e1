"""Direct Preference Optimisation from a ``preference`` snapshot (prompt / chosen / rejected).

Launch::

    python -m training.recipes.dpo --config training/configs/dpo.yaml
    accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml \
        -m training.recipes.dpo --config training/configs/dpo.yaml

Final evaluation: the trainer's implicit-reward accuracy and margin on the test split
(``eval_rewards/accuracies``, ``eval_rewards/margins``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from .config import PaddingFreeMixin, RecipeConfig, ReferenceMixin, _field
from .data import load_snapshot
from .modeling import ensure_distinct_pad, load_causal_lm, load_tokenizer, lora_config
from .packing import pack_trainer
from .runtime import RecipeRun

LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "robust",
    "bco_pair",
    "sppo_hard",
    "nca_pair",
    "apo_zero",
    "apo_down",
    "sft",
)


@dataclass
class Config(PaddingFreeMixin, ReferenceMixin, RecipeConfig):
    METHOD: ClassVar[str] = "dpo"
    SNAPSHOT_KINDS: ClassVar[tuple[str, ...]] = ("preference",)
    DEFAULT_LR: ClassVar[float] = 2e-4

    beta: float = _field(0.1, "KL strength: higher keeps the policy closer to the reference.")
    loss_type: list[str] = _field(  # noqa: RUF009 (_field wraps dataclasses.field)
        ["sigmoid"],
        f"DPO loss(es), from {LOSS_TYPES}; add 'sft' (with loss_weights) for an SFT term on the "
        "chosen answers, which guards against degenerate outputs in later rounds.",
    )
    loss_weights: list[float] | None = _field(None, "Weight per loss_type entry (None = all 1).")  # noqa: RUF009
    label_smoothing: float = _field(0.0, "Assumed label noise for the 'robust'/cDPO loss, in [0, 0.5).")
    precompute_ref_log_probs: bool = _field(
        False, "Compute reference log-probs once before training (saves memory, not time, on CPU)."
    )

    def validate(self, problems: list[tuple[str, str]]) -> None:
        super().validate(problems)
        if self.beta <= 0:
            problems.append(("beta", "must be > 0"))
        bad = [t for t in self.loss_type if t not in LOSS_TYPES]
        if not self.loss_type or bad:
            problems.append(("loss_type", f"unknown {bad}; choose from {LOSS_TYPES}"))
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            problems.append(("loss_weights", "needs one weight per loss_type entry"))
        if not 0 <= self.label_smoothing < 0.5:
            problems.append(("label_smoothing", "must be in [0, 0.5)"))


def run(cfg: Config) -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    with RecipeRun(cfg) as rr:
        snap = load_snapshot(
            cfg.snapshot_dir,
            kinds=cfg.SNAPSHOT_KINDS,
            drop_truncated=cfg.drop_truncated,
            keep_optional=(),
            max_train_rows=cfg.max_train_rows,
            seed=cfg.seed,
        )
        rr.attach_snapshot(snap)
        tok = load_tokenizer(cfg.model_name_or_path)
        ensure_distinct_pad(tok)
        model = load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)
        ref = None
        if cfg.ref_model_name_or_path:
            ref = load_causal_lm(cfg.ref_model_name_or_path, cfg=cfg, tokenizer=tok)
        elif not cfg.use_lora:
            ref = load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)
        args = DPOConfig(
            **rr.trainer_kwargs(),
            beta=cfg.beta,
            loss_type=list(cfg.loss_type),
            loss_weights=cfg.loss_weights,
            label_smoothing=cfg.label_smoothing,
            max_length=cfg.max_length,
            precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=ref,
            args=args,
            train_dataset=Dataset.from_list(snap.train),
            eval_dataset=Dataset.from_list(snap.test) if snap.test else None,
            processing_class=tok,
            peft_config=lora_config(cfg, "CAUSAL_LM"),
            callbacks=[rr.callback()],
        )
        if cfg.padding_free:
            pack_trainer(trainer, capacity=cfg.max_length)
        with rr.autocast():
            trainer.train(resume_from_checkpoint=rr.resume_from)
            rr.write_progress(status="evaluating")
            metrics = trainer.evaluate() if snap.test and cfg.final_eval else {}
        return rr.finish(
            trainer=trainer,
            tokenizer=tok,
            eval_metrics=metrics,
            merge_loader=lambda: load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok),
        )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(Config, run))
