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

from .completion_logits import lean_dpo_loss
from .config import (
    CompletionLogitsMixin,
    CutOffPrefixMixin,
    PaddingFreeMixin,
    RecipeConfig,
    ReferenceMixin,
    _field,
)
from .data import before_last_end
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
class Config(CompletionLogitsMixin, CutOffPrefixMixin, PaddingFreeMixin, ReferenceMixin, RecipeConfig):
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
        if self.precompute_ref_log_probs and self.cut_off_as_prefix:
            problems.append(
                (
                    "precompute_ref_log_probs",
                    "not with cut_off_as_prefix: the trainer would compute the reference log-probs before "
                    "cut-off answers lose their end-of-turn token; turn one of them off",
                )
            )


SIDES = ("chosen", "rejected")


def _flagged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs with a ``<side>_cut_off`` column per side (the snapshot's ``<side>_truncated``, optional)."""
    return [
        {
            **{k: v for k, v in r.items() if not k.endswith("_truncated")},
            **{f"{side}_cut_off": bool(r.get(f"{side}_truncated")) for side in SIDES},
        }
        for r in rows
    ]


def cut_off_as_prefix(dataset: Any, *, eos_token_id: int) -> Any:
    """``dataset`` (TRL's tokenized DPO rows) with each cut-off side's ``<side>_ids`` ended before its
    last end-of-turn token, and the ``<side>_cut_off`` columns removed. A cut-off rejected answer then
    counts against its text, not against stopping after it."""

    def strip(row: dict[str, Any]) -> dict[str, Any]:
        return {
            f"{side}_ids": before_last_end(row[f"{side}_ids"], eos_token_id)
            for side in SIDES
            if row[f"{side}_cut_off"]
        }

    return dataset.map(strip).remove_columns([f"{side}_cut_off" for side in SIDES])


def run(cfg: Config) -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    with RecipeRun(cfg) as rr:
        snap = rr.load_snapshot(
            keep_optional=("chosen_truncated", "rejected_truncated") if cfg.cut_off_as_prefix else ()
        )
        train, test = snap.train, snap.test
        if cfg.cut_off_as_prefix:
            train, test = _flagged(train), _flagged(test)
        cut_off = {side: sum(r.get(f"{side}_cut_off", False) for r in train) for side in SIDES}
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
            train_dataset=Dataset.from_list(train),
            eval_dataset=Dataset.from_list(test) if test else None,
            processing_class=tok,
            peft_config=lora_config(cfg, "CAUSAL_LM"),
            callbacks=[rr.callback()],
        )
        if cfg.cut_off_as_prefix:
            for name in ("train_dataset", "eval_dataset"):
                ds = getattr(trainer, name)
                if ds is not None:
                    setattr(trainer, name, cut_off_as_prefix(ds, eos_token_id=tok.eos_token_id))
        if cfg.padding_free:
            pack_trainer(trainer, capacity=cfg.max_length)
        if cfg.completion_logits_only:
            lean_dpo_loss(trainer, capacity=cfg.max_length if cfg.padding_free else None)
        metrics = rr.train(trainer, evaluate=bool(snap.test))
        return rr.finish(
            trainer=trainer,
            tokenizer=tok,
            eval_metrics=metrics,
            merge_loader=lambda: load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok),
            extra={"cut_off_rows": cut_off},
        )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(Config, run))
