"""The ``--tiny`` base model: a tiny random Llama, warmed up for a few seconds to answer in the chat
format and stop at varied lengths.

A freshly initialised model almost never samples its end-of-turn token (1 in ~500 per step), so
every candidate would run into the token limit and a length preference would have nothing to
choose between. A short supervised warm-up on answers of 1-24 random words teaches it the chat
format and to stop; its answers then vary in length and the loop has a signal to learn from.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = (
    "the a an is are because so it this that water light time people food sleep code data "
    "good bad small large fast slow warm cold day night plant animal city money work answer "
    "simple clear short long reason helps makes keeps uses needs gives"
).split()


def build_tiny_base(path: Path, *, seed: int = 0, steps: int = 100, hidden_size: int = 64) -> Path:
    """Build (once) and warm up the tiny base in ``path``; returns the folder."""
    path = Path(path)
    if (path / "config.json").exists() and (path / "warmup.json").exists():
        return path
    import torch

    from inference.engines.tiny import build_tiny_model

    from .defaults import PROMPTS_FILE

    model, tok = build_tiny_model(None, seed=seed, hidden_size=hidden_size, layers=2)
    prompts = [json.loads(line)["prompt"] for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        batch_ids, batch_labels = [], []
        for _ in range(8):
            prompt = [{"role": "user", "content": rng.choice(prompts)}]
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 24))).capitalize() + "."
            p_ids = tok.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            full = tok.apply_chat_template(
                [*prompt, {"role": "assistant", "content": answer}], tokenize=True, return_dict=False
            )
            if hasattr(p_ids, "keys"):
                p_ids, full = p_ids["input_ids"], full["input_ids"]
            full = list(full)[:128]
            labels = [-100] * len(p_ids) + full[len(p_ids) :]
            batch_ids.append(full)
            batch_labels.append(labels[: len(full)])
        width = max(len(x) for x in batch_ids)
        ids = torch.full((len(batch_ids), width), tok.pad_token_id)
        lab = torch.full((len(batch_ids), width), -100)
        mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
        for i, (x, y) in enumerate(zip(batch_ids, batch_labels, strict=True)):
            ids[i, : len(x)] = torch.tensor(x)
            lab[i, : len(y)] = torch.tensor(y)
            mask[i, : len(x)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "warmup.json").write_text(
        json.dumps({"steps": steps, "first_loss": losses[0], "last_loss": losses[-1]})
    )
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)
    return path
