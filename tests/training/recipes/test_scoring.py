"""The reward model PPO sees scores each rollout as the reward model was trained (a chat transcript)."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from training.recipes.modeling import ensure_distinct_pad, load_tokenizer
from training.recipes.scoring import EndOfTurnReward, end_of_turn_suffix, reward_scores

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from trl.experimental.ppo.ppo_trainer import get_reward


def _tok(path):
    tok = load_tokenizer(str(path), padding_side="left")
    ensure_distinct_pad(tok)
    return tok


def _tiny_rm(path):
    """The tiny model's tokenizer and a one-logit classifier on it (random head, seeded)."""
    torch.manual_seed(0)
    tok = _tok(path)
    rm = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1).eval()
    rm.config.pad_token_id = tok.pad_token_id
    return tok, rm


def _rm_score(rm, ids: list[int]) -> float:
    with torch.no_grad():
        hidden = rm.model(input_ids=torch.tensor([ids])).last_hidden_state
        return float(rm.score(hidden[0, -1]))


def test_suffix_is_what_the_chat_template_writes_after_the_end_of_turn(tiny_lm):
    tok = _tok(tiny_lm)
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
    ids = list(tok.apply_chat_template(convo, tokenize=True, return_dict=False))
    suffix = end_of_turn_suffix(tok)
    assert suffix and ids[-len(suffix) - 1] == tok.eos_token_id and ids[-len(suffix) :] == suffix
    assert tok.decode(suffix) == "\n"


def test_trl_reads_each_rollout_scored_as_a_transcript(tiny_lm):
    tok, rm = _tiny_rm(tiny_lm)
    prompt = [{"role": "user", "content": "why is the sky blue"}]
    query = list(
        tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    )
    finished = tok("short answer", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    cut_off = tok("a long answer that the sampler cut off in the", add_special_tokens=False)["input_ids"]
    pad, width = tok.pad_token_id, max(len(finished), len(cut_off))
    # TRL's layout: left-padded query, the response truncated after its EOS, pads to the right
    rows = torch.tensor(
        [
            [pad] + query + finished + [pad] * (width - len(finished)),
            [pad] + query + cut_off + [pad] * (width - len(cut_off)),
        ]
    )
    wrapped = EndOfTurnReward(rm, tok).eval()
    with torch.no_grad():
        _, scores, _ = get_reward(wrapped, rows, pad, 1 + len(query))
    suffix = end_of_turn_suffix(tok)
    expected = [
        _rm_score(rm, query + finished + suffix),
        _rm_score(rm, query + cut_off + [tok.eos_token_id] + suffix),  # a cut-off answer gets its EOS
    ]
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-5)
    # a bf16 run's autocast (training/recipes/runtime.py) does not reach the scores: float32 as above
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, under_autocast, _ = get_reward(wrapped, rows, pad, 1 + len(query))
    assert under_autocast.dtype == torch.float32 and torch.allclose(under_autocast, scores, atol=1e-6)
    # the finished row is exactly what reward_scores (evaluation, active selection) reads from the transcript
    text = tok.decode(finished[:-1])
    transcript = list(
        tok.apply_chat_template(
            [*prompt, {"role": "assistant", "content": text}], tokenize=True, return_dict=False
        )
    )
    assert transcript == query + finished + suffix
    (direct,) = reward_scores(rm, tok, [prompt], [[{"role": "assistant", "content": text}]])
    assert abs(direct - expected[0]) < 1e-5
    # without the wrapper TRL would read the score at the EOS (finished) or mid-sentence (cut off)
    with torch.no_grad():
        _, raw, _ = get_reward(rm, rows, pad, 1 + len(query))
    assert not torch.allclose(raw, scores, atol=1e-3)


def test_reward_scores_batch_by_length_and_answer_in_input_order(tiny_lm):
    tok, rm = _tiny_rm(tiny_lm)
    prompt = [{"role": "user", "content": "why is the sky blue"}]
    texts = ["a long answer " * 6, "no", "because of scattering", "light " * 9, "yes it is", "blue"]
    answers = [[{"role": "assistant", "content": t}] for t in texts]
    one_by_one = [reward_scores(rm, tok, [prompt], [a])[0] for a in answers]
    batched = reward_scores(rm, tok, [prompt] * len(texts), answers, batch_size=4)
    assert len(set(one_by_one)) == len(texts)  # distinct scores, so an order mix-up would show
    assert batched == [pytest.approx(s, abs=1e-5) for s in one_by_one]
