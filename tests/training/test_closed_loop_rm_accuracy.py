"""The closed loop's reward-model accuracy scores each answer once, however many pairs it is in,
and counts the same pairs right as scoring both sides of every pair would."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from inference.engines.tiny import build_tiny_model
from training.closed_loop import reward_check
from training.recipes import scoring
from training.recipes.modeling import ensure_distinct_pad, load_tokenizer


def _count_scored(monkeypatch) -> list[int]:
    """Record how many answers each reward_scores call scores (then scores them as usual)."""
    scored: list[int] = []
    real = scoring.reward_scores

    def counting(model, tok, prompts, completions, **kw):
        scored.append(len(completions))
        return real(model, tok, prompts, completions, **kw)

    monkeypatch.setattr(scoring, "reward_scores", counting)
    return scored


def test_rm_accuracy_scores_each_answer_once_and_matches_pairwise_scoring(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    rm_dir = tmp_path / "rm"
    build_tiny_model(rm_dir, seed=3, num_labels=1)
    groups = [
        (
            [{"role": "user", "content": f"question {i}"}],
            [(f"answer {i} {j} " * (j + 1), False) for j in range(4)],
        )
        for i in range(5)
    ]
    pairs = reward_check.preference_pairs("shorter", groups)
    assert len(pairs) == 5 * 6  # every pair of four answers of different length

    scored = _count_scored(monkeypatch)
    got = reward_check.rm_accuracy(str(rm_dir), pairs)
    assert sum(scored) == 5 * 4
    monkeypatch.undo()

    tok = load_tokenizer(str(rm_dir))
    ensure_distinct_pad(tok)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    model.config.pad_token_id = tok.pad_token_id
    right = 0
    for prompt, better, worse in pairs:
        a, b = scoring.reward_scores(
            model,
            tok,
            [prompt, prompt],
            [[{"role": "assistant", "content": better[0]}], [{"role": "assistant", "content": worse[0]}]],
        )
        right += a > b
    assert got == right / len(pairs)
    assert 0 < got < 1  # a random head: some pairs each way, so the comparison means something


def test_rm_accuracies_score_answers_shared_by_sets_once(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    rm_dir = tmp_path / "rm"
    build_tiny_model(rm_dir, seed=5, num_labels=1)
    prompt = [{"role": "user", "content": "question"}]
    answers = [(f"word {j} " * (j + 1), False) for j in range(4)]
    heldout = reward_check.preference_pairs("shorter", [(prompt, answers[:3])])
    policy = reward_check.preference_pairs("shorter", [(prompt, answers[1:])])
    scored = _count_scored(monkeypatch)
    got = reward_check.rm_accuracies(str(rm_dir), {"heldout": heldout, "policy": policy, "none": []})
    assert sum(scored) == 4  # two answers are in both sets: scored once
    monkeypatch.undo()
    assert got["heldout"] == reward_check.rm_accuracy(str(rm_dir), heldout)
    assert got["policy"] == reward_check.rm_accuracy(str(rm_dir), policy)
    assert got["none"] is None
