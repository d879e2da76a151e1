"""Sampling on the CPU: the transformers engine's NucleusSampler against transformers' own sampling.

    .venv/bin/python benchmarks/sampling.py [--prompts 16] [--n 4] [--max-new-tokens 32] [--rounds 2]
    .venv/bin/python benchmarks/sampling.py --ending --model DIR --max-new-tokens 128

The demo model generates the same batch (``prompts`` x ``n`` rows, temperature 0.8, top-p 0.95) both ways,
alternating (transformers, nucleus, transformers, nucleus, ...): ``generate(do_sample=True, top_p=...)``,
which sorts the whole vocabulary on every step, and ``generate`` with
``inference.engines.sampling.sampling_kwargs``. Every row generates exactly ``max-new-tokens`` tokens
(``min_new_tokens`` holds EOS back), so both sides do the same model work and differ in sampling alone.

``--ending`` lets rows end at their EOS, as the engine does, and compares the sampler told the EOS ids (it
skips the rows that have ended: ``nucleus_eos``) with the sampler not told them (``nucleus``, which keeps
drawing for them from the nearly flat scores of a model reading its own padding). It matters for a model
whose answers end early while others in the batch go on: pass one with ``--model`` (a closed-loop DPO
version, say).

Prints one JSON line: rows, steps, the best seconds of each side, tokens/s of each, and ``speedup``
(transformers' seconds / the sampler's; with ``--ending``, the blind sampler's / the EOS-aware one's, and
``mean_tokens``, the mean generated length). torch runs on every core (as a generation worker does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=None, help="a causal LM folder (default: the demo model)")
    parser.add_argument(
        "--dtype", default="float32", help="float32 or bfloat16 (where the CPU multiplies it)"
    )
    parser.add_argument(
        "--ending", action="store_true", help="rows end at their EOS: the sampler with and without EOS ids"
    )
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.generation import load_prompts
    from inference.engines.demo_model import ensure_demo_model
    from inference.engines.sampling import sampling_kwargs

    model_path = args.model or str(ensure_demo_model())
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(
        model_path, local_files_only=True, dtype=getattr(torch, args.dtype)
    ).eval()
    texts = [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in load_prompts(args.prompts)
    ]
    rows = [t for t in texts for _ in range(args.n)]
    batch = tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = tokenizer.eos_token_id
    common: dict = {
        "max_new_tokens": args.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": eos,
        "use_cache": True,
    }
    if args.ending:
        sides = {
            "nucleus": sampling_kwargs(temperature=0.8, top_p=0.95),
            "nucleus_eos": sampling_kwargs(temperature=0.8, top_p=0.95, eos_token_ids=[eos]),
        }
    else:
        common["min_new_tokens"] = args.max_new_tokens
        sides = {
            "transformers": {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": None},
            "nucleus": sampling_kwargs(temperature=0.8, top_p=0.95),
        }
    best: dict[str, float] = {}
    steps: dict[str, int] = {}
    generated: dict[str, int] = {}
    for round_no in range(args.rounds):
        for name, kwargs in sides.items():
            torch.manual_seed(round_no)
            began = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**batch, **common, **kwargs)
            seconds = time.perf_counter() - began
            new = out[:, batch["input_ids"].shape[1] :]
            if not args.ending:
                assert new.shape[1] == args.max_new_tokens
            if seconds < best.get(name, float("inf")):
                best[name], steps[name] = seconds, new.shape[1]
                ended = (new == eos).int().cumsum(dim=-1) > 0  # the first EOS and what follows
                generated[name] = int((~ended).sum()) + int(ended.any(dim=-1).sum())
            print(f"# round {round_no + 1} {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    slow, fast = sides
    line = {"rows": len(rows), "vocab": model.config.vocab_size, "ending": args.ending}
    for name in sides:
        line[f"{name}_s"] = round(best[name], 2)
        line[f"{name}_steps"] = steps[name]
        line[f"{name}_tokens_per_s"] = round(generated[name] / best[name], 1)
        line[f"{name}_mean_tokens"] = round(generated[name] / len(rows), 1)
    line["speedup"] = round(best[slow] / best[fast], 3)
    line["threads"] = torch.get_num_threads()
    print(json.dumps(line))


if __name__ == "__main__":
    main()
