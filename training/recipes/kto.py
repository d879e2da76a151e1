"""KTO from binary labels: an ``unpaired`` snapshot (prompt / completion / label), or a
``preference`` snapshot split into chosen = desirable and rejected = undesirable rows.

Launch::

    python -m training.recipes.kto --config training/configs/kto.yaml
    accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml \
        -m training.recipes.kto --config training/configs/kto.yaml

KTO estimates its KL term from mismatched completions *within a batch*, so the batch must hold
more than one row and the trainer reads rows in order: this recipe shuffles them (seeded) first —
thumbs exported prompt by prompt would otherwise put one prompt's rows together.
``loss_type: apo_zero_unpaired`` is KTO's loss with that reference point fixed at 0: the
trainer then skips the KL estimate's two extra forward passes (policy and reference, over the
mismatched completions) in every step.

Final evaluation: the trainer's reward means / KL on the test split, plus
``eval_label_accuracy``: the share of test rows whose implied reward
(beta * (log pi - log pi_ref) of the completion) has the sign of its label, and
``eval_reward_margin``: the mean implied reward of desirable minus undesirable test rows.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from .completion_logits import lean_kto_loss
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

#: TRL 1.12's KTO loss types: "kto" estimates the reference point, "apo_zero_unpaired" fixes it at 0
LOSS_TYPES = ("kto", "apo_zero_unpaired")


@dataclass
class Config(CompletionLogitsMixin, CutOffPrefixMixin, PaddingFreeMixin, ReferenceMixin, RecipeConfig):
    METHOD: ClassVar[str] = "kto"
    SNAPSHOT_KINDS: ClassVar[tuple[str, ...]] = ("unpaired", "preference")
    DEFAULT_LR: ClassVar[float] = 2e-4

    beta: float = _field(0.1, "KL strength: higher keeps the policy closer to the reference.")
    loss_type: str = _field(
        "kto",
        "'kto': the KTO loss, its reference point a per-batch KL estimate from mismatched completions "
        "(clamped at 0). 'apo_zero_unpaired': the same loss with the reference point fixed at 0 (TRL's "
        "unpaired APO-zero), which skips the estimate's two extra forward passes per step; it trains "
        "identically whenever the clamped estimate would have been 0.",
    )
    desirable_weight: float = _field(1.0, "Loss weight of thumbs-up rows.")
    undesirable_weight: float = _field(1.0, "Loss weight of thumbs-down rows.")
    balance_weights: bool = _field(
        True,
        "Scale desirable_weight so that desirable_weight*n_up ~ undesirable_weight*n_down "
        "(KTO paper's guidance, Eq. 8) when thumbs are unbalanced.",
    )
    sft_weight: float = _field(
        0.0,
        "Weight of an SFT term added to the KTO loss: the mean negative log-likelihood per token of "
        "the batch's thumbs-up completions (0 = plain KTO). Thumbs-down answers are often much longer "
        "than thumbs-up ones, so KTO's per-sequence push-down outweighs its push-up token by token and "
        "can lower every answer's likelihood (the implied reward of thumbs-up rows falls too); the SFT "
        "term keeps them likely, as DPO's 'sft' loss does for chosen answers.",
    )

    def validate(self, problems: list[tuple[str, str]]) -> None:
        super().validate(problems)
        if self.loss_type not in LOSS_TYPES:
            problems.append(("loss_type", f"must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}"))
        if self.loss_type == "kto":
            if self.per_device_train_batch_size < 2:
                problems.append(
                    ("per_device_train_batch_size", "KTO needs > 1: its KL term compares rows within a batch")
                )
            if self.per_device_eval_batch_size < 2:
                problems.append(("per_device_eval_batch_size", "KTO needs > 1 (KL term within a batch)"))
        if self.beta <= 0:
            problems.append(("beta", "must be > 0"))
        for name in ("desirable_weight", "undesirable_weight"):
            if getattr(self, name) <= 0:
                problems.append((name, "must be > 0"))
        if self.sft_weight < 0:
            problems.append(("sft_weight", "must be >= 0"))


def desirable_nll(model: Any, inputs: dict[str, Any]) -> Any:
    """Mean negative log-likelihood per completion token of the batch's thumbs-up rows (None if the
    batch has none), from the KTO collator's right-padded ``input_ids`` / ``attention_mask`` /
    ``completion_mask`` and ``label``."""
    import torch

    up = torch.nonzero(torch.as_tensor(inputs["label"]).bool(), as_tuple=False).view(-1)
    if up.numel() == 0:
        return None
    up = up.to(inputs["input_ids"].device)
    attention = inputs["attention_mask"].index_select(0, up)
    width = int(attention.sum(-1).max())
    ids = inputs["input_ids"].index_select(0, up)[:, :width]
    completion = inputs["completion_mask"].index_select(0, up)[:, 1:width].bool()
    logits = model(input_ids=ids, attention_mask=attention[:, :width]).logits[:, :-1, :]
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return -(token_logps * completion).sum() / completion.sum().clamp(min=1)


def with_sft_term(trainer_cls: type, weight: float) -> type:
    """``trainer_cls`` (TRL's KTOTrainer) with ``weight`` x desirable_nll added to each training loss
    (logged as ``sft_nll``). Evaluation losses stay plain KTO. A trainer whose loss computes the term
    itself from the policy's pass (``sft_in_loss``, set by completion_logits.lean_kto_loss) is left as
    it is."""

    class KTOWithSFTTrainer(trainer_cls):  # type: ignore[misc, valid-type]
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
            if not model.training or getattr(self, "sft_in_loss", False):
                return out
            nll = desirable_nll(model, inputs)
            if nll is None:
                return out
            self._metrics["train"]["sft_nll"].append(float(nll.detach()))
            if return_outputs:
                return out[0] + weight * nll, out[1]
            return out + weight * nll

    return KTOWithSFTTrainer


def _unpair(rows: list[dict]) -> list[dict]:
    """Thumbs rows as they are, preference pairs as a thumbs-up and a thumbs-down row; ``cut_off``
    marks a completion that hit the token limit."""
    out = []
    for r in rows:
        if "label" in r:
            out.append(
                {
                    "prompt": r["prompt"],
                    "completion": r["completion"],
                    "label": bool(r["label"]),
                    "cut_off": bool(r.get("completion_truncated")),
                }
            )
        else:
            for side, label in (("chosen", True), ("rejected", False)):
                out.append(
                    {
                        "prompt": r["prompt"],
                        "completion": r[side],
                        "label": label,
                        "cut_off": bool(r.get(f"{side}_truncated")),
                    }
                )
    return out


def cut_off_as_prefix(dataset: Any, *, eos_token_id: int) -> Any:
    """``dataset`` (TRL's tokenized KTO rows) with each ``cut_off`` row's ``completion_ids`` ended
    before its last end-of-turn token (the chat template's end, and what follows it), and the
    ``cut_off`` column removed. The mismatched completions of the KL estimate (loss_type 'kto')
    keep their ends: they only estimate the reference point."""

    def strip(row: dict[str, Any]) -> dict[str, Any]:
        if row["cut_off"]:
            return {"completion_ids": before_last_end(row["completion_ids"], eos_token_id)}
        return {}

    return dataset.map(strip).remove_columns("cut_off")


def run(cfg: Config) -> dict[str, Any]:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from .scoring import completion_logps

    with RecipeRun(cfg) as rr:
        snap = rr.load_snapshot(
            keep_optional=("completion_truncated", "chosen_truncated", "rejected_truncated")
        )
        train = _unpair(snap.train)
        test = _unpair(snap.test)
        random.Random(cfg.seed).shuffle(train)
        n_up = sum(r["label"] for r in train)
        n_down = len(train) - n_up
        desirable_weight = cfg.desirable_weight
        if cfg.balance_weights and n_up and n_down:
            desirable_weight = (
                cfg.desirable_weight * (n_down * cfg.undesirable_weight) / (n_up * cfg.desirable_weight)
            )
            desirable_weight = max(desirable_weight, 1e-3)
        tok = load_tokenizer(cfg.model_name_or_path)
        ensure_distinct_pad(tok)
        model = load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)
        ref = None
        if cfg.ref_model_name_or_path:
            ref = load_causal_lm(cfg.ref_model_name_or_path, cfg=cfg, tokenizer=tok)
        elif not cfg.use_lora:
            ref = load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)
        args = KTOConfig(
            **rr.trainer_kwargs(),
            beta=cfg.beta,
            loss_type=cfg.loss_type,
            desirable_weight=desirable_weight,
            undesirable_weight=cfg.undesirable_weight,
            max_length=cfg.max_length,
        )
        trainer_cls = with_sft_term(KTOTrainer, cfg.sft_weight) if cfg.sft_weight > 0 else KTOTrainer
        trainer = trainer_cls(
            model=model,
            ref_model=ref,
            args=args,
            train_dataset=Dataset.from_list(train),
            eval_dataset=Dataset.from_list(test) if len(test) >= 2 else None,
            processing_class=tok,
            peft_config=lora_config(cfg, "CAUSAL_LM"),
            callbacks=[rr.callback()],
        )
        cut_off_rows = sum(r["cut_off"] for r in train) if cfg.cut_off_as_prefix else 0
        for name in ("train_dataset", "eval_dataset"):
            ds = getattr(trainer, name)
            if ds is not None:
                if cfg.cut_off_as_prefix:
                    ds = cut_off_as_prefix(ds, eos_token_id=tok.eos_token_id)
                else:
                    ds = ds.remove_columns("cut_off")
                setattr(trainer, name, ds)
        if cfg.padding_free:
            pack_trainer(trainer, capacity=cfg.max_length)
        if cfg.completion_logits_only:
            capacity = cfg.max_length if cfg.padding_free else None
            lean_kto_loss(trainer, capacity=capacity, sft_weight=cfg.sft_weight)
        metrics = rr.train(trainer, evaluate=len(test) >= 2)
        if metrics:
            policy = trainer.accelerator.unwrap_model(trainer.model)
            policy.eval()
            prompts = [r["prompt"] for r in test]
            comps = [r["completion"] for r in test]
            kw = {"batch_size": cfg.per_device_eval_batch_size, "max_length": cfg.max_length}
            pol = completion_logps(policy, tok, prompts, comps, **kw)
            if trainer.ref_model is not None:
                refl = completion_logps(trainer.ref_model, tok, prompts, comps, **kw)
            else:
                with policy.disable_adapter():
                    refl = completion_logps(policy, tok, prompts, comps, **kw)
            hits = [(p - r > 0) == row["label"] for p, r, row in zip(pol, refl, test, strict=True)]
            metrics["eval_label_accuracy"] = sum(hits) / len(hits)
            implied = [cfg.beta * (p - r) for p, r in zip(pol, refl, strict=True)]
            up = [x for x, row in zip(implied, test, strict=True) if row["label"]]
            down = [x for x, row in zip(implied, test, strict=True) if not row["label"]]
            if up and down:  # mean implied reward of desirable minus undesirable completions
                metrics["eval_reward_margin"] = sum(up) / len(up) - sum(down) / len(down)
        return rr.finish(
            trainer=trainer,
            tokenizer=tok,
            eval_metrics=metrics,
            merge_loader=lambda: load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok),
            extra={
                "desirable_weight": desirable_weight,
                "rows": {"desirable": n_up, "undesirable": n_down},
                "cut_off_rows": cut_off_rows,
            },
        )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(Config, run))
