"""``python -m training.closed_loop``: the whole loop on a fresh database (see ``loop.py``; settings in ``defaults.py``).

Also ``benchmarks/closed_loop.py`` and ``manage.py closed_loop`` (both call :func:`main`).
Prints one JSON line per preference, method and round; writes results.jsonl, steps.jsonl and
win_rates.png to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .stack import Stack, stack_env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="closed_loop",
        description="Simulated annotators label through the real API; the labels train new versions; "
        "held-out win-rate against the base by the annotators' hidden preference.",
    )
    p.add_argument(
        "--tiny", action="store_true", help="tiny random model, shorter-wins + DPO only (CI, minutes)"
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="2 = generate from the new version, label, train again"
    )
    p.add_argument(
        "--preferences",
        default=None,
        help="comma list of: shorter, sentence, reason (default: shorter,sentence; tiny: shorter)",
    )
    p.add_argument(
        "--methods", default=None, help="methods for the length preference, comma list of dpo,kto,ppo"
    )
    p.add_argument(
        "--content-methods", default=None, help="methods for the content preference (default: dpo)"
    )
    p.add_argument("--round2-methods", default="dpo", help="methods that get a second round")
    p.add_argument("--annotators", type=int, default=4)
    p.add_argument("--noise", type=float, default=0.1, help="label noise of the simulated annotators")
    p.add_argument("--candidates", type=int, default=4, help="responses per train prompt (ranked together)")
    p.add_argument(
        "--thumb-votes",
        type=int,
        default=3,
        help="annotators per thumbs item (KTO's labels, merged by majority; at most --annotators)",
    )
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--train-prompts", type=int, default=None, help="use the first N train prompts")
    p.add_argument("--heldout-prompts", type=int, default=None, help="use the first N held-out prompts")
    p.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="held-out answers per prompt and version: 1 = greedy (default), more = sampled (tiny: 4)",
    )
    p.add_argument("--model", default=None, help="a local HF folder instead of the demo model")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="recipe override, e.g. dpo.learning_rate=1e-4 (YAML value)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads for generation and training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for results.jsonl, steps.jsonl, win_rates.png")
    p.add_argument(
        "--data-dir", default=None, help="data folder (default: a fresh temporary one, removed after)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    return p.parse_args(argv)


def options_from_args(args: argparse.Namespace):
    import yaml

    from .defaults import LoopOptions

    tiny = args.tiny
    prefs = (
        tuple(args.preferences.split(","))
        if args.preferences
        else (("shorter",) if tiny else ("shorter", "sentence"))
    )
    length_methods = (
        tuple(args.methods.split(",")) if args.methods else (("dpo",) if tiny else ("dpo", "kto", "ppo"))
    )
    content_methods = tuple(args.content_methods.split(",")) if args.content_methods else ("dpo",)
    overrides: dict[str, dict] = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        method, dot, field = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set expects METHOD.KEY=VALUE, got {item!r}")
        overrides.setdefault(method, {})[field] = yaml.safe_load(raw)
    return LoopOptions(
        tiny=tiny,
        rounds=args.rounds,
        preferences=prefs,
        methods={"shorter": length_methods, "sentence": content_methods, "reason": content_methods},
        round2_methods=tuple(args.round2_methods.split(",")),
        annotators=args.annotators,
        noise=args.noise,
        candidates=args.candidates,
        thumb_votes=args.thumb_votes,
        max_new_tokens=args.max_new_tokens or (24 if tiny else 128),
        train_prompts=args.train_prompts or (48 if tiny else None),
        heldout_prompts=args.heldout_prompts or (24 if tiny else None),
        seed=args.seed,
        out_dir=Path(args.out or ("closed_loop_tiny" if tiny else "closed_loop_out")).resolve(),
        model_path=args.model,
        recipe_overrides=overrides,
        threads=args.threads or (1 if tiny else 2),
        eval_samples=args.eval_samples or (4 if tiny else 1),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = options_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # A plain `kill` unwinds like Ctrl-C: the stack (web server, workers) is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    owned = args.data_dir is None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="arbiter-closed-loop-")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = stack_env(data_dir, threads=options.threads)
    os.environ.update(env)
    started = time.perf_counter()
    import django

    django.setup()
    import torch
    from django.core.management import call_command

    torch.set_num_threads(options.threads)
    call_command("migrate", interactive=False, verbosity=0)
    from .loop import run_loop

    try:
        with Stack(data_dir, env) as stack:
            lines = run_loop(options, base_url=stack.url, data_dir=data_dir, check=stack.check_alive)
    finally:
        if owned and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    total = time.perf_counter() - started
    summary = {"total_seconds": round(total, 1), "lines": len(lines), "out": str(options.out_dir)}
    (options.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
