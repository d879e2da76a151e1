"""Scoring helpers shared by recipes' evaluations and active selection (Django-free).

- ``completion_logps``: summed log-probability of each completion given its prompt.
- ``reward_scores``: a reward model's scalar for each (prompt, completion).
- ``generate``: greedy completions for chat prompts.
- ``EndOfTurnReward``: a reward model as TRL's PPO reads it, scoring each rollout as the model was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

Messages = list[dict[str, str]]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _chat_ids(tokenizer, prompt: Messages, completion: Messages | None) -> tuple[list[int], int]:
    """Token ids of prompt (+ completion) and the prompt's length, via the chat template."""
    p_ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    if hasattr(p_ids, "keys"):
        p_ids = p_ids["input_ids"]
    if completion is None:
        return list(p_ids), len(p_ids)
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=False)
    if hasattr(full, "keys"):
        full = full["input_ids"]
    return list(full), len(p_ids)


def _pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


@torch.no_grad()
def completion_logps(
    model,
    tokenizer,
    prompts: Sequence[Messages],
    completions: Sequence[Messages],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[float]:
    """Sum of log p(completion tokens | prompt) per row. Masks come from lengths, not the pad id. Rows are
    scored in batches of similar length (:func:`_length_batches`), returned in input order."""
    device = _device(model)
    seqs, starts = [], []
    for p, c in zip(prompts, completions, strict=True):
        ids, n_prompt = _chat_ids(tokenizer, p, c)
        if max_length:
            ids = ids[:max_length]
        seqs.append(ids)
        starts.append(min(n_prompt, len(ids)))
    out = [0.0] * len(seqs)
    for rows in _length_batches(seqs, batch_size):
        ids, mask = _pad_right([seqs[i] for i in rows], tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        for row, i in enumerate(rows):
            out[i] = float(logp[row, starts[i] - 1 : len(seqs[i]) - 1].sum())
    return out


def _length_batches(seqs: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length, shortest first: a batch is as wide as its longest row, and
    answers cut off at the token limit beside short finished ones would otherwise make most of every batch
    padding (the closed loop's reward-model check: 115 s in input order, 73 s so, 480 answers)."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()
def reward_scores(
    model,
    tokenizer,
    prompts: Sequence[Messages],
    completions: Sequence[Messages],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[float]:
    """A one-logit sequence classifier's score for each (prompt, completion), read at the last real token.
    Rows are scored in batches of similar length (:func:`_length_batches`), returned in input order."""
    device = _device(model)
    seqs = []
    for p, c in zip(prompts, completions, strict=True):
        ids, _ = _chat_ids(tokenizer, p, c)
        seqs.append(ids[:max_length] if max_length else ids)
    out = [0.0] * len(seqs)
    for rows in _length_batches(seqs, batch_size):
        scores = _scores_at_last_token(model, [seqs[i] for i in rows], tokenizer.pad_token_id, device)
        for i, score in zip(rows, scores.squeeze(-1).float().tolist(), strict=True):
            out[i] = float(score)
    return out


def _scores_at_last_token(model, seqs: list[list[int]], pad_id: int, device: torch.device) -> torch.Tensor:
    """A one-logit classifier's score of each token sequence, read at its own last token (independent of how
    the head finds it): shape (rows, 1). In float32 whatever the caller runs under, so a reward does not depend
    on the policy's precision. (The 0.65 accuracy once blamed on scoring under bfloat16 came from training
    under autocast's weight cache, runtime.cpu_bf16_autocast: a closed-loop reward model of 2026-12-06 ranked
    the same 244 held-out pairs at 0.861 in float32, 0.869 under autocast and 0.873 with bfloat16 weights.)"""
    ids, mask = _pad_right(seqs, pad_id)
    base = getattr(model, model.base_model_prefix)
    with torch.autocast(device_type=device.type, enabled=False):
        hidden = base(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        last = mask.sum(1).to(device) - 1
        return model.score(hidden[torch.arange(len(seqs), device=device), last])


@torch.no_grad()
def generate(
    model, tokenizer, prompts: Sequence[Messages], *, max_new_tokens: int, batch_size: int = 8
) -> list[dict[str, Any]]:
    """Greedy completions: ``[{"text", "finish_reason": "stop"|"length", "tokens"}]``."""
    device = _device(model)
    results: list[dict[str, Any]] = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        seqs = [_chat_ids(tokenizer, p, None)[0] for p in prompts[start : start + batch_size]]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):  # left padding for generation
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row in gen[:, width:].tolist():
            stop = tokenizer.eos_token_id in row
            body = row[: row.index(tokenizer.eos_token_id)] if stop else row
            body = [t for t in body if t != pad]
            results.append(
                {
                    "text": tokenizer.decode(body, skip_special_tokens=True),
                    "finish_reason": "stop" if stop else "length",
                    "tokens": len(body),
                }
            )
    return results


def end_of_turn_suffix(tokenizer) -> list[int]:
    """Token ids the chat template writes after an answer's end-of-turn (EOS) token: SmolLM2's writes "\\n"."""
    ids, _ = _chat_ids(tokenizer, [{"role": "user", "content": "q"}], [{"role": "assistant", "content": "a"}])
    eos = tokenizer.eos_token_id
    if eos not in ids:
        return []
    return ids[len(ids) - ids[::-1].index(eos) :]


class _Rescore(nn.Module):
    """The backbone EndOfTurnReward shows TRL: every position of a row carries the row's score."""

    def __init__(self, reward_model, *, eos_id: int, pad_id: int, suffix: Sequence[int]) -> None:
        super().__init__()
        self.reward_model = reward_model
        self.eos_id, self.pad_id, self.suffix = eos_id, pad_id, list(suffix)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> Any:
        from types import SimpleNamespace

        seqs = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.bool().tolist(), strict=True):
            tokens = [t for t, keep in zip(ids, mask, strict=True) if keep]
            if not tokens or tokens[-1] != self.eos_id:
                # cut off: judged as the answer it is (TRL adds its missing-EOS penalty)
                tokens.append(self.eos_id)
            seqs.append(tokens + self.suffix)
        scores = _scores_at_last_token(self.reward_model, seqs, self.pad_id, input_ids.device)  # (rows, 1)
        width = input_ids.shape[1]
        return SimpleNamespace(hidden_states=(scores[:, None, :].expand(-1, width, -1),))


class EndOfTurnReward(nn.Module):
    """A reward model wrapped for TRL's PPO, which scores a rollout at its last token: the end-of-turn token, or
    for an answer cut off at ``response_length``, a token in mid-sentence. The reward model was trained on chat
    transcripts, read after the template's end-of-turn suffix (SmolLM2: EOS then "\\n"), and never saw either
    position: measured on the demo model's length preference, it scored answers cut off at 64 tokens +1.14 on
    average and finished short ones +0.14, so the missing-EOS penalty (1.0) was cancelled and PPO had no reason
    to stop (the EOS count stayed flat over every run). Here each rollout is scored as a transcript, as in
    training and in ``reward_scores``: an EOS is added to a cut-off answer, then the template's suffix.

    TRL reads ``model.<base_model_prefix>(...).hidden_states[-1]`` and ``model.score(...)`` at the last
    token; this module's backbone returns each row's score at every position and ``score`` passes it through.
    """

    base_model_prefix = "rescore"

    def __init__(self, reward_model, tokenizer) -> None:
        super().__init__()
        self.rescore = _Rescore(
            reward_model,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
            suffix=end_of_turn_suffix(tokenizer),
        )
        self.score = nn.Identity()
