"""DPO and KTO steps with the LM head at completion tokens only (training/recipes/completion_logits.py)
against TRL's full logits, on the demo model.

    .venv/bin/python benchmarks/completion_logits.py [--snapshot DIR] [--methods dpo,kto] [--steps 4] [--rounds 2]

Each recipe trains the same rows (the same seed, so the same batches) for ``--steps`` steps with
``completion_logits_only`` off, then on, ``--rounds`` times in turn, at the closed loop's settings
(batch 8, LoRA r16, max_length 256, padding-free, torch on every core; DPO with the loss terms
sigmoid + sft, KTO with apo_zero_unpaired, beta 0.5 and the SFT term on thumbs-up answers at weight 4,
which TRL's code gets from a pass of its own). ``--snapshot`` is a preference export (the closed
loop's, say; KTO trains its pairs as a thumbs-up and a thumbs-down row); without it the rows are built
as in benchmarks/padding_free.py. Prints one JSON line per method: the best training seconds of each
side (TRL's ``train_runtime``), ``speedup`` (full / completion-only), each round's seconds, and each
side's logged loss per step (LoRA dropout is off, so the two agree to rounding).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.padding_free import prepare, train_once  # noqa: E402

#: the loss settings of the closed loop's runs (training/closed_loop/defaults.py)
LOOP_SETTINGS: dict[str, dict[str, object]] = {
    "dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]},
    "kto": {"loss_type": "apo_zero_unpaired", "beta": 0.5, "sft_weight": 4.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--snapshot", default=None, help="a preference export folder (default: built here)")
    parser.add_argument("--methods", default="dpo,kto")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=64, help="rows of the snapshot built here")
    parser.add_argument("--model", default=None, help="a causal LM folder (default: the demo model)")
    args = parser.parse_args()
    model, tmp, snapshot = prepare(args.model, args.snapshot, args.rows, prefix="arbiter-bench-cl-")
    for method in args.methods.split(","):
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.rounds):
            for lean in (False, True):
                out = tmp / f"{method}-{lean}-{r}"
                overrides = {**LOOP_SETTINGS[method], "completion_logits_only": lean}
                runs[lean].append(train_once(method, snapshot, model, out, args.steps, **overrides))
        full = min(x["seconds"] for x in runs[False])
        lean_s = min(x["seconds"] for x in runs[True])
        print(
            json.dumps(
                {
                    "method": method,
                    "steps": args.steps,
                    "full_logits_s": round(full, 1),
                    "completion_logits_s": round(lean_s, 1),
                    "speedup": round(full / lean_s, 3),
                    "rounds_full_s": [round(x["seconds"], 1) for x in runs[False]],
                    "rounds_completion_s": [round(x["seconds"], 1) for x in runs[True]],
                    "losses_full": runs[False][0]["losses"],
                    "losses_completion": runs[True][0]["losses"],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
