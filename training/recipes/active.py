"""Active selection scorer: how close a reward model finds each item's candidates.

``python -m training.recipes.active --model RUN/final --input items.jsonl --output scores.jsonl``

Input lines: ``{"item_id", "prompt": [messages], "candidates": ["text", ...]}``. Output lines:
``{"item_id", "scores": [...], "gap", "priority"}`` where ``gap`` is the smallest difference
between two of the item's candidates' rewards and ``priority = 1 / (1 + gap)`` (in (0, 1]; the
closer the reward model finds the candidates, the more a human label teaches it). Items are
scored in order; the output is written to a temporary file and renamed when complete.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path


def item_priority(scores: list[float]) -> tuple[float | None, float]:
    if len(scores) < 2:
        return None, 0.0
    ordered = sorted(scores)
    gap = min(b - a for a, b in itertools.pairwise(ordered))
    return gap, 1.0 / (1.0 + gap)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.recipes.active", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, help="reward model folder (a reward run's final/)")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)

    import torch

    from .config import RecipeConfig
    from .modeling import ensure_distinct_pad, load_sequence_classifier, load_tokenizer
    from .scoring import reward_scores

    cfg = RecipeConfig.__new__(RecipeConfig)  # only device/dtype knobs are read by the loaders
    cfg.device, cfg.bf16, cfg.model_dtype = args.device, None, "auto"
    tok = load_tokenizer(args.model)
    ensure_distinct_pad(tok)
    model = load_sequence_classifier(args.model, cfg=cfg, tokenizer=tok)
    if args.device != "cpu" and torch.cuda.is_available():
        model = model.cuda()
    model.eval()

    items = []
    with open(args.input, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    print(f"error: {args.input}:{lineno}: invalid JSON: {exc.msg}", file=sys.stderr)
                    return 2
    prompts, comps, owners = [], [], []
    for i, item in enumerate(items):
        for text in item["candidates"]:
            prompts.append(item["prompt"])
            comps.append([{"role": "assistant", "content": text}])
            owners.append(i)
    scores = reward_scores(model, tok, prompts, comps, batch_size=args.batch_size, max_length=args.max_length)
    per_item: list[list[float]] = [[] for _ in items]
    for owner, score in zip(owners, scores, strict=True):
        per_item[owner].append(score)
    out = Path(args.output)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for item, s in zip(items, per_item, strict=True):
            gap, priority = item_priority(s)
            fh.write(
                json.dumps({"item_id": item["item_id"], "scores": s, "gap": gap, "priority": priority}) + "\n"
            )
    os.replace(tmp, out)
    print(json.dumps({"items": len(items), "candidates": len(scores)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
