"""Sampling on the CPU: the transformers engine's NucleusSampler against transformers' own sampling.

    .venv/bin/python benchmarks/sampling.py [--prompts 16] [--n 4] [--max-new-tokens 32] [--rounds 2]

The demo model generates the same batch (``prompts`` x ``n`` rows, temperature 0.8, top-p 0.95) both ways,
alternating (transformers, nucleus, transformers, nucleus, ...): ``generate(do_sample=True, top_p=...)``,
which sorts the whole vocabulary on every step, and ``generate`` with
``inference.engines.sampling.sampling_kwargs``. Every row generates exactly ``max-new-tokens`` tokens
(``min_new_tokens`` holds EOS back), so both sides do the same model work and differ in sampling alone.

Prints one JSON line: rows, steps, the best seconds of each side, tokens/s of each, and ``speedup``
(transformers' seconds / the sampler's). torch runs on every core (as a generation worker does).
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
        model_path, local_files_only=True, dtype=torch.float32
    ).eval()
    texts = [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in load_prompts(args.prompts)
    ]
    rows = [t for t in texts for _ in range(args.n)]
    batch = tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=False)
    common = {
        "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
    }
    sides = {
        "transformers": {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": None},
        "nucleus": sampling_kwargs(temperature=0.8, top_p=0.95),
    }
    best: dict[str, float] = {}
    for round_no in range(args.rounds):
        for name, kwargs in sides.items():
            torch.manual_seed(round_no)
            began = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**batch, **common, **kwargs)
            seconds = time.perf_counter() - began
            assert out.shape[1] - batch["input_ids"].shape[1] == args.max_new_tokens
            best[name] = min(seconds, best.get(name, seconds))
            print(f"# round {round_no + 1} {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    tokens = len(rows) * args.max_new_tokens
    print(
        json.dumps(
            {
                "rows": len(rows),
                "steps": args.max_new_tokens,
                "vocab": model.config.vocab_size,
                "transformers_s": round(best["transformers"], 2),
                "nucleus_s": round(best["nucleus"], 2),
                "transformers_tokens_per_s": round(tokens / best["transformers"], 1),
                "nucleus_tokens_per_s": round(tokens / best["nucleus"], 1),
                "speedup": round(best["transformers"] / best["nucleus"], 3),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
