"""PPO (RLHF) with TRL 1.12's ``trl.experimental.ppo``: a policy, a frozen reference, a value model
and the reward model a ``reward`` run produced. RM + PPO is a pipeline: run ``reward`` first,
then point ``reward_model_path`` at its ``final/`` folder.

Only the prompts of the snapshot are used (any kind: preference, unpaired or sft); completions
are sampled from the policy, scored by the reward model as it was trained (a chat transcript: a
cut-off answer gets its end-of-turn token, then the template's suffix; see
``scoring.EndOfTurnReward``), and penalised by ``kl_coef`` times the KL to the reference (keep the
original base as ``ref_model_name_or_path`` across rounds).

Launch::

    python -m training.recipes.ppo --config training/configs/ppo.yaml
    accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml \
        -m training.recipes.ppo --config training/configs/ppo.yaml

TRL's PPO loop has no resume of its own: this recipe saves the value model next to each
checkpoint and, on resume, reloads policy, value model, optimiser and scheduler and runs the
remaining updates (data order after a resume is a fresh shuffle).

Final evaluation on the test prompts (greedy, ``response_length`` tokens): mean reward of the
policy's and the reference's answers, the policy's win rate against the reference under the
reward model, and the share of answers that stop (EOS) or are empty.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .config import RecipeConfig, ReferenceMixin, _field
from .data import prompts_of
from .modeling import (
    ensure_distinct_pad,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
    lora_config,
)
from .runtime import RecipeRun, is_main_process

VALUE_FILE = "value_model.safetensors"


@dataclass
class Config(ReferenceMixin, RecipeConfig):
    METHOD: ClassVar[str] = "ppo"
    SNAPSHOT_KINDS: ClassVar[tuple[str, ...]] = ("preference", "unpaired", "sft")
    DEFAULT_LR: ClassVar[float] = 1e-5

    reward_model_path: str = _field("", "final/ folder of a reward run (a one-logit classifier). Required.")
    value_model_path: str | None = _field(
        None,
        "Initial value model (a classifier folder, or a causal LM that gets a fresh head); None = the reward model.",
    )
    response_length: int = _field(64, "Tokens sampled per prompt in each rollout.")
    temperature: float = _field(0.7, "Sampling temperature of rollouts.")
    kl_coef: float = _field(0.05, "KL penalty coefficient (per token, against the reference).")
    kl_estimator: str = _field("k1", "KL estimator: 'k1' (unbiased) or 'k3' (lower variance).")
    num_ppo_epochs: int = _field(4, "PPO epochs over each rollout batch.")
    num_mini_batches: int = _field(1, "Minibatches per rollout batch.")
    local_rollout_forward_batch_size: int = _field(16, "Rows per forward pass while rolling out.")
    missing_eos_penalty: float | None = _field(
        1.0, "Subtracted from the score of answers that never stop (no EOS); None disables."
    )
    cliprange: float = _field(0.2, "Policy ratio clip range.")
    cliprange_value: float = _field(0.2, "Value clip range.")
    vf_coef: float = _field(0.1, "Value loss coefficient.")
    gamma: float = _field(1.0, "Discount factor.")
    lam: float = _field(0.95, "GAE lambda.")
    whiten_rewards: bool = _field(False, "Whiten rewards (needs local mini-batches of >= 8).")
    value_learning_rate: float | None = _field(
        None,
        "Learning rate of the value model, which is trained in full (LoRA applies to the policy only); "
        "None = learning_rate. A LoRA policy's rate is far above what full fine-tuning usually takes: the "
        "closed loop trains the value model at 1e-5 beside a policy at 2e-4.",
    )
    eval_prompts: int = _field(64, "Test prompts used for the final reward evaluation (0 = skip).")

    def validate(self, problems: list[tuple[str, str]]) -> None:
        super().validate(problems)
        if not self.reward_model_path:
            problems.append(("reward_model_path", "is required (the final/ folder of a reward run)"))
        for name in (
            "response_length",
            "num_ppo_epochs",
            "num_mini_batches",
            "local_rollout_forward_batch_size",
        ):
            if getattr(self, name) < 1:
                problems.append((name, "must be >= 1"))
        if self.temperature <= 0:
            problems.append(("temperature", "must be > 0"))
        if self.kl_coef < 0:
            problems.append(("kl_coef", "must be >= 0"))
        if self.kl_estimator not in ("k1", "k3"):
            problems.append(("kl_estimator", "must be 'k1' or 'k3'"))
        local_batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if local_batch % self.num_mini_batches:
            problems.append(
                (
                    "num_mini_batches",
                    f"must divide per_device_train_batch_size*gradient_accumulation_steps={local_batch}",
                )
            )
        if self.whiten_rewards and local_batch // self.num_mini_batches < 8:
            problems.append(("whiten_rewards", "needs mini-batches of at least 8 rows"))
        if self.response_length >= self.max_length:
            problems.append(("response_length", "must be < max_length (prompt + response)"))
        if self.eval_prompts < 0:
            problems.append(("eval_prompts", "must be >= 0"))
        if self.value_learning_rate is not None and self.value_learning_rate <= 0:
            problems.append(("value_learning_rate", "must be > 0 (or null: the policy's rate)"))


def _trainer_class():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.ppo import PPOTrainer

    class ResumablePPOTrainer(PPOTrainer):
        """Checkpoints carry the value model and the absolute step, so a run can resume."""

        step_offset = 0
        value_learning_rate: float | None = None

        def create_optimizer(self, model=None):
            """The policy's parameter groups at ``learning_rate``, the value model's at its own rate."""
            optimizer = super().create_optimizer(model)
            if self.value_learning_rate is None:
                return optimizer
            value_ids = {id(p) for p in self.value_model.parameters()}
            for group in list(optimizer.param_groups):
                value_params = [p for p in group["params"] if id(p) in value_ids]
                if not value_params:
                    continue
                group["params"] = [p for p in group["params"] if id(p) not in value_ids]
                optimizer.add_param_group(
                    {
                        "params": value_params,
                        "weight_decay": group["weight_decay"],
                        "lr": self.value_learning_rate,
                    }
                )
            optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
            return optimizer

        def _save_checkpoint(self, model, trial):
            self.state.global_step += self.step_offset
            try:
                super()._save_checkpoint(model, trial)
                folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
                value = self.accelerator.unwrap_model(self.model).value_model
                state = self.accelerator.get_state_dict(value)
                if is_main_process():
                    from safetensors.torch import save_file

                    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / VALUE_FILE))
            finally:
                self.state.global_step -= self.step_offset

        def resume(self, checkpoint: str, step: int) -> None:
            from safetensors.torch import load_file

            wrapper = self.accelerator.unwrap_model(self.model)
            self._load_from_checkpoint(checkpoint, model=wrapper.policy)
            wrapper.value_model.load_state_dict(load_file(str(Path(checkpoint) / VALUE_FILE)))
            import torch

            device = self.accelerator.device
            self.optimizer.load_state_dict(
                torch.load(Path(checkpoint) / "optimizer.pt", map_location=device, weights_only=True)
            )
            self.lr_scheduler.load_state_dict(
                torch.load(Path(checkpoint) / "scheduler.pt", weights_only=True)
            )
            self.step_offset = step
            self.args.num_total_batches = max(self.args.num_total_batches - step, 0)

    return ResumablePPOTrainer


def _evaluate(trainer, tok, cfg: Config, prompts: list, reward_model) -> dict[str, float]:
    from .scoring import generate, reward_scores

    prompts = prompts[: cfg.eval_prompts] if cfg.final_eval else []
    if not prompts:
        return {}
    policy = trainer.accelerator.unwrap_model(trainer.model).policy
    policy.eval()
    kw = {"max_new_tokens": cfg.response_length, "batch_size": cfg.per_device_eval_batch_size}
    ours = generate(policy, tok, prompts, **kw)
    if trainer.ref_model is not None:
        theirs = generate(trainer.ref_model, tok, prompts, **kw)
    else:
        with policy.disable_adapter():
            theirs = generate(policy, tok, prompts, **kw)

    def score(outs):
        comps = [[{"role": "assistant", "content": o["text"]}] for o in outs]
        return reward_scores(reward_model, tok, prompts, comps, batch_size=cfg.per_device_eval_batch_size)

    s_ours, s_ref = score(ours), score(theirs)
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(s_ours, s_ref, strict=True)]
    n = len(prompts)
    return {
        "eval_reward_policy": sum(s_ours) / n,
        "eval_reward_reference": sum(s_ref) / n,
        "eval_win_rate_vs_reference": sum(wins) / n,
        "eval_stop_rate": sum(o["finish_reason"] == "stop" for o in ours) / n,
        "eval_empty_rate": sum(not o["text"].strip() for o in ours) / n,
        "eval_mean_tokens": sum(o["tokens"] for o in ours) / n,
        "eval_prompts": n,
    }


def run(cfg: Config) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding

    from .scoring import EndOfTurnReward

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.ppo import PPOConfig

    with RecipeRun(cfg) as rr:
        # PPO reads only the prompts (the policy writes its own answers): a row whose stored
        # answer was cut off still brings a good prompt, so truncation drops nothing here.
        snap = rr.load_snapshot(drop_truncated=False)
        tok = load_tokenizer(cfg.model_name_or_path, padding_side="left")
        ensure_distinct_pad(tok)
        max_prompt = cfg.max_length - cfg.response_length

        def encode(prompts):
            rows = []
            for p in prompts:
                ids = tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
                if len(ids) <= max_prompt:
                    rows.append({"input_ids": list(ids)})
            return rows

        train_prompts = prompts_of(snap.train)
        test_prompts = prompts_of(snap.test)
        train_rows = encode(train_prompts)
        world = int(__import__("os").environ.get("WORLD_SIZE", "1"))
        batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world
        if len(train_rows) < cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps:
            from .data import SnapshotError

            raise SnapshotError(
                f"{cfg.snapshot_dir}: {len(train_rows)} distinct prompts fit in {max_prompt} tokens; PPO needs at "
                f"least one rollout batch ({cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps})"
            )
        eval_rows = encode(test_prompts) or train_rows[: cfg.per_device_eval_batch_size]
        total_episodes = cfg.max_steps * batch if cfg.max_steps > 0 else None

        policy = load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)
        ref = None
        if cfg.ref_model_name_or_path:
            ref = load_causal_lm(cfg.ref_model_name_or_path, cfg=cfg, tokenizer=tok)
        elif not cfg.use_lora:
            ref = load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)
        reward_model = load_sequence_classifier(cfg.reward_model_path, cfg=cfg, tokenizer=tok)
        value_model = load_sequence_classifier(
            cfg.value_model_path or cfg.reward_model_path, cfg=cfg, tokenizer=tok
        )
        reward_model.requires_grad_(False)

        kwargs = rr.trainer_kwargs()
        kwargs["max_steps"] = -1
        args = PPOConfig(
            **kwargs,
            total_episodes=total_episodes,
            response_length=cfg.response_length,
            temperature=cfg.temperature,
            kl_coef=cfg.kl_coef,
            kl_estimator=cfg.kl_estimator,
            num_ppo_epochs=cfg.num_ppo_epochs,
            num_mini_batches=cfg.num_mini_batches,
            local_rollout_forward_batch_size=cfg.local_rollout_forward_batch_size,
            missing_eos_penalty=cfg.missing_eos_penalty,
            cliprange=cfg.cliprange,
            cliprange_value=cfg.cliprange_value,
            vf_coef=cfg.vf_coef,
            gamma=cfg.gamma,
            lam=cfg.lam,
            whiten_rewards=cfg.whiten_rewards,
            stop_token="eos",
            num_sample_generations=0,
            reward_model_path=str(cfg.reward_model_path),
            sft_model_path=str(cfg.model_name_or_path),
        )
        trainer_class = _trainer_class()
        # read while __init__ builds the optimiser
        trainer_class.value_learning_rate = cfg.value_learning_rate
        trainer = trainer_class(
            args=args,
            processing_class=tok,
            model=policy,
            ref_model=ref,
            # scored as the reward model was trained (the end-of-turn suffix; see EndOfTurnReward)
            reward_model=EndOfTurnReward(reward_model, tok),
            value_model=value_model,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows),
            data_collator=DataCollatorWithPadding(tok),
            peft_config=lora_config(cfg, "CAUSAL_LM"),
            callbacks=[],
        )
        trainer.add_callback(rr.callback(step_offset=lambda: trainer.step_offset))
        if rr.resume_from:
            trainer.resume(rr.resume_from, rr.resume_step)
        with rr.autocast():
            trainer.train()
            final_step = trainer.step_offset + trainer.state.global_step
            rr.write_progress(status="evaluating", step=final_step)
            metrics = _evaluate(trainer, tok, cfg, test_prompts or train_prompts, reward_model)
        return rr.finish(
            trainer=trainer,
            tokenizer=tok,
            eval_metrics=metrics,
            merge_loader=lambda: load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok),
            step=final_step,
            extra={"reward_model": str(Path(cfg.reward_model_path).resolve())},
        )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(Config, run))
