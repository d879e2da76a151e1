"""Padding-free training steps (training/recipes/packing.py) against padded ones, on the demo model.

    .venv/bin/python benchmarks/padding_free.py [--snapshot DIR] [--methods dpo,kto,reward] [--steps 4] [--rounds 2]

Each method's recipe (dpo, kto, orpo or reward) trains the same rows (the same seed, so the same
batches) for ``--steps`` steps with ``padding_free`` off, then on, ``--rounds`` times in turn, at the
closed loop's settings (batch 8, LoRA r16, max_length 256, torch on every core). ``--snapshot`` is a
preference export (the closed loop's, say: answers the demo model wrote). Without it the rows are
built here: the demo prompts, and answers of words whose token lengths follow what the closed
loop's length preference exported on 2026-12-03 (chosen 15-128 tokens, median 67; rejected 37-130, median 96;
prompts with the chat template 35-41).

Prints one JSON line per method: the best training seconds of each side (TRL's ``train_runtime``,
model loading and saving left out), ``speedup`` (padded / packed), and the token slots the model ran
per step on each side (``slots_padded``, ``slots_packed``: every forward pass of the policy and the
reference) with the real tokens among them, and each side's logged loss per step (LoRA dropout is
off, so the two agree to rounding). Only the snapshot's train split is used.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: token lengths of the closed loop's exported answers (shorter wins, 256 pairs), 2026-12-03: the
#: 10th, 20th, ... 100th percentiles
CHOSEN_DECILES = (15, 24, 36, 57, 67, 84, 91, 99, 127, 128)
REJECTED_DECILES = (37, 59, 70, 81, 98, 113, 128, 128, 128, 130)


def synthetic_snapshot(folder: Path, rows: int, tokenizer) -> Path:
    from benchmarks.generation import load_prompts

    rng = random.Random(0)
    words = [w for w in (ROOT / "README.md").read_text().split() if w.isalpha()][:2000]

    def text(tokens: int) -> str:
        out: list[str] = []
        while len(tokenizer(" ".join(out), add_special_tokens=False)["input_ids"]) < tokens:
            out.append(rng.choice(words))
        return " ".join(out)

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for prompt in load_prompts(rows):
        chosen, rejected = rng.choice(CHOSEN_DECILES), rng.choice(REJECTED_DECILES)
        chosen, rejected = min(chosen, rejected), max(chosen, rejected)
        lines.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": text(chosen)}],
                "rejected": [{"role": "assistant", "content": text(rejected)}],
            }
        )
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    manifest = {"snapshot_id": "bench", "kind": "preference", "content_hash": "bench",
                "row_counts": {"train": len(lines), "test": 0}, "filters": {}}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def train_once(method: str, snapshot: Path, model: str, out: Path, steps: int, **overrides: object) -> dict:
    """Train ``steps`` steps at the closed loop's settings (with ``overrides``): the training seconds, the
    logged losses and the token slots the packing planner saw."""
    from training.recipes import packing, recipe

    slots = {"padded": 0, "packed": 0, "real": 0}
    real_plan = packing.plan_packing

    def counting_plan(input_ids, attention_mask, **kw):
        plan = real_plan(input_ids, attention_mask, **kw)
        slots["padded"] += input_ids.numel()
        slots["real"] += int(attention_mask.sum())
        slots["packed"] += input_ids.numel() if plan is None else plan.rows * plan.width
        return plan

    packing.plan_packing = counting_plan
    try:
        mod = recipe(method)
        cfg = {
            "model_name_or_path": model, "snapshot_dir": str(snapshot), "output_dir": str(out),
            "device": "cpu", "max_steps": steps, "per_device_train_batch_size": 8, "learning_rate": 2e-4,
            "max_length": 256, "lora_r": 16, "lora_alpha": 32, "save_steps": 1000, "logging_steps": 1,
            "drop_truncated": False, "seed": 0,
            "save_mode": "merged" if method == "reward" else "adapter",  # a reward model is saved merged
            "lora_dropout": 0.0,  # no random masks: both sides compute the same losses
        }  # fmt: skip
        mod.run(mod.Config.from_dict({**cfg, **overrides}))
    finally:
        packing.plan_packing = real_plan
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = next(x["train_runtime"] for x in lines if "train_runtime" in x)
    losses = [round(x["loss"], 4) for x in lines if "loss" in x]
    return {"seconds": seconds, "losses": losses, **slots}


def prepare(model: str | None, snapshot: str | None, rows: int, *, prefix: str) -> tuple[str, Path, Path]:
    """The model folder (default: the demo model), a scratch folder, and the rows to train on: the train
    split of ``snapshot`` (no evaluation pass in the timings), or ``rows`` rows built here."""
    from transformers import AutoTokenizer

    from inference.engines.demo_model import ensure_demo_model

    model = model or str(ensure_demo_model())
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    if not snapshot:
        return model, tmp, synthetic_snapshot(tmp / "snapshot", rows, AutoTokenizer.from_pretrained(model))
    folder = tmp / "snapshot"
    folder.mkdir()
    train = (Path(snapshot) / "train.jsonl").read_text()
    (folder / "train.jsonl").write_text(train)
    manifest = json.loads((Path(snapshot) / "manifest.json").read_text())
    manifest["row_counts"] = {"train": len(train.splitlines()), "test": 0}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return model, tmp, folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--snapshot", default=None, help="a preference export folder (default: built here)")
    parser.add_argument("--methods", default="dpo,kto,reward")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=64, help="rows of the snapshot built here")
    parser.add_argument("--model", default=None, help="a causal LM folder (default: the demo model)")
    args = parser.parse_args()
    model, tmp, snapshot = prepare(args.model, args.snapshot, args.rows, prefix="arbiter-bench-pf-")
    for method in args.methods.split(","):
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.rounds):
            for padding_free in (False, True):
                out = tmp / f"{method}-{padding_free}-{r}"
                runs[padding_free].append(
                    train_once(method, snapshot, model, out, args.steps, padding_free=padding_free)
                )
        padded = min(x["seconds"] for x in runs[False])
        packed = min(x["seconds"] for x in runs[True])
        per_step = {k: runs[True][0][k] / args.steps for k in ("padded", "packed", "real")}
        print(
            json.dumps(
                {
                    "method": method,
                    "steps": args.steps,
                    "padded_s": round(padded, 1),
                    "packed_s": round(packed, 1),
                    "speedup": round(padded / packed, 3),
                    "rounds_padded_s": [round(x["seconds"], 1) for x in runs[False]],
                    "rounds_packed_s": [round(x["seconds"], 1) for x in runs[True]],
                    "slots_padded": round(per_step["padded"]),
                    "slots_packed": round(per_step["packed"]),
                    "real_tokens": round(per_step["real"]),
                    "losses_padded": runs[False][0]["losses"],
                    "losses_packed": runs[True][0]["losses"],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
