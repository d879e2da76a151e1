"""The reward model's held-out accuracy: pairs ordered by the hidden preference (no noise) among candidates
it never trained on, and the share it orders the same way (Django-aware: it reads candidates and snapshots).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .preferences import get_preference
from .steps import Context, sample_pool

#: (prompt messages, [(answer text, cut off)]) per prompt
Groups = list[tuple[list[dict], list[tuple[str, bool]]]]
#: (prompt messages, better (text, cut off), worse (text, cut off)) by the hidden preference
Pairs = list[tuple[list[dict], tuple[str, bool], tuple[str, bool]]]


def rm_accuracy(reward_dir: str, pairs: Pairs) -> float | None:
    """Share of (prompt, better, worse) pairs — worse/better by the hidden preference, no noise —
    that the reward model orders the same way."""
    return rm_accuracies(reward_dir, {"all": pairs})["all"]


def rm_accuracies(reward_dir: str, pair_sets: dict[str, Pairs]) -> dict[str, float | None]:
    """:func:`rm_accuracy` for several named sets of pairs, loading the model once and scoring each
    answer once, however many pairs (and sets) it is in (an answer among four is in three pairs)."""
    if not any(pair_sets.values()):
        return {name: None for name in pair_sets}
    import torch
    from transformers import AutoModelForSequenceClassification

    from training.recipes.modeling import ensure_distinct_pad, load_tokenizer
    from training.recipes.scoring import reward_scores

    tok = load_tokenizer(reward_dir)
    ensure_distinct_pad(tok)
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    index: dict[tuple[str, str], int] = {}
    prompts: list[list[dict]] = []
    completions: list[list[dict]] = []
    sides: dict[str, list[tuple[int, int]]] = {}  # (better, worse) as positions in the scored list
    for name, pairs in pair_sets.items():
        sides[name] = []
        for prompt, *answers in pairs:
            prompt_key = json.dumps(prompt, sort_keys=True)
            at = []
            for text, _ in answers:
                key = (prompt_key, text)
                if key not in index:
                    index[key] = len(prompts)
                    prompts.append(prompt)
                    completions.append([{"role": "assistant", "content": text}])
                at.append(index[key])
            sides[name].append((at[0], at[1]))
    scores = reward_scores(model, tok, prompts, completions, batch_size=16)
    return {
        name: (sum(scores[b] > scores[w] for b, w in pos) / len(pos)) if pos else None
        for name, pos in sides.items()
    }


def preference_pairs(preference: str, groups: Groups) -> Pairs:
    """All pairs with a strict preference (no noise) among each prompt's responses."""
    pref = get_preference(preference)
    out = []
    for messages, responses in groups:
        for i in range(len(responses)):
            for j in range(len(responses)):
                if pref.score(*responses[i]) > pref.score(*responses[j]):
                    out.append((messages, responses[i], responses[j]))
    return out


def rm_check_pool(ctx: Context, tag: str, parent: Any, held_prompts: list[dict]) -> Groups:
    """The parent's candidates for the held-out prompts, sampled as its training pool was (no labels:
    the hidden preference judges them)."""
    project, job = sample_pool(
        ctx,
        f"{tag} reward-model check from {parent.name}",
        parent,
        held_prompts,
        "Held-out candidates for the reward model's accuracy (not annotated).",
    )
    ctx.note(step="generate", project=project.name, prompts=job.progress_done, items=job.items_created)
    return _candidate_groups(project)


def _candidate_groups(project: Any, prompt_hashes: set[str] | None = None) -> Groups:
    """The project's candidates per prompt (only the prompts with these content hashes, if given)."""
    from feedback.models import Candidate

    groups: dict[int, tuple[list[dict], list[tuple[str, bool]]]] = {}
    for c in Candidate.objects.filter(prompt__project=project).select_related("prompt").order_by("id"):
        if prompt_hashes is None or c.prompt.content_hash in prompt_hashes:
            groups.setdefault(c.prompt_id, (c.prompt.messages, []))[1].append(
                (c.text, c.finish_reason == "length")
            )
    return list(groups.values())


def snapshot_test_groups(snapshot: Any, project: Any) -> Groups:
    """The candidates of the prompts the snapshot held out (its test split), per prompt."""
    from feedback import pii

    test = Path(snapshot.path) / "test.jsonl"
    if not test.exists():
        return []
    hashes = set()
    for line in test.read_text(encoding="utf-8").splitlines():
        if line.strip():
            hashes.add(pii.messages_hash(json.loads(line)["prompt"]))
    return _candidate_groups(project, hashes)
