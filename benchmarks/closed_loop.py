"""The loop, proven: simulated annotators through the real API move the model, measured.

    .venv/bin/python benchmarks/closed_loop.py                 # demo model, both preferences
    .venv/bin/python benchmarks/closed_loop.py --rounds 2      # a second round from the new versions
    .venv/bin/python benchmarks/closed_loop.py --tiny          # tiny random model (CI, minutes)

From a fresh database: import the prompt set (training/closed_loop/prompts.jsonl: train and
held-out prompts), generate candidates with the base version through a generation job, let
simulated annotators (several accounts, each logging in for a token and doing next -> submit over
HTTP, with a hidden preference and 10 % label noise) rank them and give thumbs (three annotators per
response, merged by majority: --thumb-votes), export snapshots,
train DPO (pairs), KTO (thumbs) and reward model -> PPO through the Celery training task, register
the new versions, generate on the held-out prompts and judge each new version against the base by
the hidden preference; the Bradley-Terry leaderboard from simulated votes on the same held-out
items must rank them the same way.

Prints one JSON line per preference, method and round: model, preference, method, win_rate,
rm_accuracy, empty_rate, seconds (+ round, leaderboard agreement, run ids ...); writes
results.jsonl, steps.jsonl and win_rates.png to --out. All options: --help.

rm_accuracy (reward model + PPO lines) is the reward model's held-out pairwise accuracy: candidates
sampled from the version it was trained from, as its training pool was, for prompts it never saw
(the snapshot's test split and the held-out prompts), every pair the hidden preference orders,
judged without label noise. rm_accuracy_policy_answers is the same on the pairs among the held-out
answers of the base and the new versions (answers far shorter than any it was trained on).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.closed_loop.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
