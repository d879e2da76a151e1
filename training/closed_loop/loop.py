"""The closed loop, end to end, through the app's own parts (Django-aware).

fresh database -> import prompts -> generation job (base) -> simulated annotators over HTTP
(ranking items for DPO and the reward model, thumbs items for KTO) -> snapshots through the
exports service -> training runs through the Celery task (DPO, KTO, reward -> PPO) -> registered
versions -> held-out generation job (base versus the new versions) -> win-rate by the hidden
preference, and a Bradley-Terry leaderboard from simulated votes on the same held-out items.
``rounds=2`` generates from each new version, labels again and trains again (the reference
stays the original base: the training service anchors a lineage to its root).

Call :func:`run_loop` in a process whose environment came from ``stack.stack_env`` (see
``training/closed_loop/__main__.py``), after ``django.setup()``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.recipes import modeling

from .annotator import Account, ApiClient, annotate_all
from .preferences import empty_rate, get_preference, win_rate
from .report import ResultLine, plot_win_rates

logger = logging.getLogger("closed_loop")
PROMPTS_FILE = Path(__file__).with_name("prompts.jsonl")


# -- options -----------------------------------------------------------------------------------
@dataclass
class LoopOptions:
    tiny: bool = False
    rounds: int = 1
    preferences: tuple[str, ...] = ("shorter", "sentence")
    #: methods per preference; "ppo" means reward model then PPO
    methods: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"shorter": ("dpo", "kto", "ppo"), "sentence": ("dpo",), "reason": ("dpo",)}
    )
    #: methods that get a second round when rounds == 2
    round2_methods: tuple[str, ...] = ("dpo",)
    annotators: int = 4
    noise: float = 0.1
    candidates: int = 4
    max_new_tokens: int = 96
    temperature: float = 0.8
    train_prompts: int | None = None
    heldout_prompts: int | None = None
    seed: int = 0
    out_dir: Path = Path("closed_loop_out")
    model_path: str | None = None
    #: recipe overrides per method (merged over the defaults below)
    recipe_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_timeout_s: float = 3 * 3600
    threads: int = 2
    #: held-out answers per prompt and version: 1 = greedy; more = sampled at ``temperature``
    eval_samples: int = 1
    #: annotators who give their thumbs on each response (KTO's labels, merged by majority; at most ``annotators``).
    #: Thumbs-up answers are rare (~20 % of the pool), so one flipped thumb in ten lands there often: at seed 5, 32
    #: of 81 thumbs-up labels were flips with one vote, 12 of 68 with three (a label flips with odds ~3 %)
    thumb_votes: int = 3

    def methods_for(self, preference: str) -> tuple[str, ...]:
        return tuple(self.methods.get(preference, ()))


def recipe_defaults(method: str, *, tiny: bool, threads: int = 2) -> dict[str, Any]:
    """Recipe settings for the loop, as measured on the demo model on a loaded 2-core CPU
    (90 train prompts x 4 candidates, 10 % label noise, greedy held-out answers on 30 prompts).

    With 128 new tokens (the demo default since 2026-12-01; 44 % of sampled base answers finish,
    against 26 % at 64 tokens, so far more pairs have a finished preferred answer):

    - DPO, plain (LoRA r16, beta 0.1, lr 2e-4, 2 epochs, 209 of 239 pairs kept; the default until
      2026-12-03): shorter-wins 0.93, 0/30 empty or looping, mean 10.7 words against the base's 76.7
      (19/30 base answers cut off). 54 steps of ~15 s each on 2 idle cores. One epoch (28 steps,
      743 s, 2026-12-02): 0.88, 1/30 empty or looping, mean 14.3 words, the leaderboard agrees
      (1151 [1091, 1292] against 849); generation, labels, DPO and the held-out judging took 20
      minutes in all. The same two-epoch settings again (2026-12-02, ``--rounds 2``; the machine
      shared with other work, so no timings): 0.82, 1/30 empty, 15.5 words on average, the
      leaderboard agrees (1112 [1051, 1219] against 888). Once more (2026-12-03, candidates drawn by
      inference.engines.sampling, on a machine running at about half speed: generation 325 s, 58 DPO
      steps 1,877 s, 2,307 s in all): 0.77, 4/30 answers running to the token limit, 21.7 words on
      average, the leaderboard agrees (1120 [1060, 1200] against 880). Plain two-epoch DPO is not
      reliably >= 0.85 or clean from run to run.
    - DPO as the loop runs it now, in every round: one epoch with an SFT term on the chosen answers
      (``loss_type`` sigmoid + sft, weights 1 and 1; it keeps their tokens likely, where plain DPO may
      push everything down and let EOS come first, the guard the tiny model needed too). 2026-12-03,
      the same half-speed machine (29 steps, 931 s; 1,356 s in all, generation included): 0.92,
      0/30 empty and none cut off, 33.4 words on average, the leaderboard agrees (1151 [1095, 1275]
      against 849). Again, padding-free (2026-12-03, a slow machine: 29 steps of ~29 s): 0.90, 0/30
      empty, 1/30 cut off, 30.3 words on average, the leaderboard agrees (1074 [1007, 1135] against
      889). A second round with plain two-epoch DPO collapsed (2026-12-02: round 1 0.82,
      round 2 from it, on 451 pairs of far shorter candidates, 0.77 with 5/30 empty answers and 3.3
      words on average: shorter kept winning until the answers were gone, the pitfall the bare script
      showed); with the guard in round 2 (round 1 plain, ``--rounds 2``; no timings): round 1 0.97
      (0/30 empty, 11.3 words, 243 train rows), round 2 0.97 with 0/30 empty and 8.2 words (410 train
      rows), the leaderboard agreeing in both (1191 [1120, 1354] and 1163 [1091, 1292] against the base).
    - KTO (lr 2e-4, 1 epoch, 322 thumbs): shorter-wins 0.85, but 2/30 answers looped (a repeated
      line, "1.1.1.…"): lower the learning rate (1e-4) before a second round. Again on 2026-12-03
      (323 thumbs, padding-free, 38 steps): 0.63, with 8/30 answers empty and 9/30 cut off; the
      trainer's KL estimate stayed at 0 and both rewards fell (eval: chosen -1.98, rejected -3.47):
      it pushes every answer down. KTO at this rate is not reliable here.
    - KTO, 2026-12-04 (a fast machine: candidate generation 220 s, a KTO step ~15 s; 323 thumbs, 60
      thumbs-up and 242 thumbs-down kept, desirable weight 4.0; 38 steps), one run each:
      lr 1e-4: 0.72, 5/30 empty or looping, 7/30 cut off, 31 words on average; rewards of both kinds
      fell again (chosen -0.72, rejected -3.0 at the end; KL estimate 0). lr 1e-4 with beta 0.5 (the
      loss saturates sooner, so it stops pushing answers down sooner): 0.72, 0/30 empty, 9/30 cut
      off, 55 words. The thumbs-down answers are long (166 of 242 cut off at 128 tokens) and the
      thumbs-up ones short, so the per-sequence push-down outweighs the push-up token by token. The
      loop's KTO since: beta 0.5, lr 2e-4 and an SFT term on the thumbs-up answers (``sft_weight``
      1, as DPO's): 0.75, 1/30 looping, 7/30 cut off, 52.8 words, the leaderboard agrees (1014
      [937, 1086] against 838); 547 s of training (no final evaluation pass). Again with ``--seed 1``
      (other candidates, noise, LoRA init and order; 329 thumbs, 39 steps, 583 s): 0.78, but 3/30
      answers looping at the token limit, 5/30 cut off, 45.9 words (1057 [979, 1136] against 812);
      DPO in the same run: 0.92, 0/30 empty or cut off, 29.3 words.
    - DPO, content (one sentence), plain, 2 epochs, 212 pairs: 0.92, 0/30 empty, mean 11.9 words, the
      Bradley–Terry leaderboard agrees (1176 [1120, 1275] against the base's 824). Round 2 from
      it (46 pairs: most candidates were already one sentence, so ties): 0.92, 0/30 empty; the
      whole second round took 250 s.

    - Reward model (LoRA r16, lr 2e-4, 1 epoch = 28 steps, 413 s; all ranking pairs, 243 train
      rows): 0.885 noise-free held-out pairwise accuracy (0.825 on the snapshot's noisy test labels).
    - The loop's default PPO since 2026-12-03: 12 rollout batches of 16 (the rest as below), after
      a padding-free reward model (29 steps): shorter-wins 0.85, 1/30 empty, 5/30 cut off (the base
      19/30), 41.6 words on average, reward model 0.853 noise-free held-out accuracy (0.975 on the
      snapshot's noisy test labels), the leaderboard agrees (1046 [990, 1108] against 889). Reward
      model + PPO took 1,372 s on a slow machine (84 s per rollout batch; candidate generation
      took 741 s there), where 20 batches would have taken about 11 minutes more.
    - The whole default loop for the length preference, 2026-12-04, a fast machine, ``--rounds 2``
      (``python -m training.closed_loop --preferences shorter --methods dpo,kto,ppo --rounds 2``):
      round 1 took 2,176 s (36.3 minutes): candidate generation 226 s, DPO 502 s (30 steps, 255
      pairs), KTO 547 s (38 steps), reward model 206 s (30 steps) + PPO 592 s (12 rollout batches,
      ~49 s each), held-out generation and judging ~90 s. DPO 0.87 (1/30 looping at the token limit,
      34.5 words), KTO 0.75 (1/30 looping, 52.8 words), PPO 0.75 with 4/30 answers looping at the
      token limit under greedy decoding (34.1 words; reward model 0.878 noise-free held-out, 0.94 on
      the snapshot's noisy test labels); the leaderboard agrees for all three (1121, 1014 and 1027
      against the base's 838). Round 2 (DPO from round 1's DPO, 412 pairs, 52 steps, 776 s): 0.92,
      0/30 empty or cut off, 19.9 words (1176 [1107, 1767] against 824); 3,337 s for both rounds.
    - The loop as it runs now (2026-12-04, the same fast machine, which multiplies bfloat16 in
      hardware): DPO and KTO under bfloat16 autocast, KTO with its reference point fixed at 0
      (``loss_type`` apo_zero_unpaired: no KL-estimate passes; the estimate had been 0 in every run),
      generation in bfloat16; reward model and PPO in float32. ``--rounds 2 --round2-methods
      dpo,kto,ppo``: round 1 took 1,483 s (24.7 minutes): candidate generation 125 s, DPO 318 s (28
      steps), KTO 252 s (38 steps), reward model + PPO 718 s, held-out generation and judging 67 s.
      DPO 0.87 (1/30 looping: "1. 1. 1.1.1.…", 19.6 words), KTO 0.87 (2/30 looping, 18.3 words), PPO
      0.93 (0/30, 16.3 words; reward model 0.849 noise-free held-out, 0.81 on the snapshot's noisy
      test labels); the leaderboard agrees for all three (1041, 1096 and 1073 against 790). Round 2,
      each from its round-1 version (2,183 s; 3,666 s for both rounds): DPO 0.93, 0/30 empty or cut
      off, 6.9 words (420 pairs, 417 s); KTO 0.90 with 1/30 looping (the same "1. 1. 1.1.1." prompt),
      16.4 words; PPO 0.88 with 2/30 looping ("Ew, no, no, no, …" and "Alright, alright, …" to the
      token limit under greedy decoding), 9.3 words, reward model 0.906; the leaderboard agrees for
      all three. The same with all four methods under autocast: the reward model ranked its test
      pairs at 0.65 and PPO did not move (0.42, 76.9 words); DPO 0.90 and KTO 0.85 there. Content
      (one sentence), DPO in bf16 (``--preferences sentence``; beside a CI run, so no timings): 0.90,
      0/30 empty, 1/30 cut off, 25.1 words, the leaderboard agrees (1163 [1112, 1256] against 837).
    - On 60 held-out prompts (2026-12-05; 30 until then, where a single looping answer read 3.3 %
      against the 2 % target), another machine with bfloat16 in hardware, ~10 % slower per DPO
      step, ``--rounds 2 --round2-methods dpo,kto,ppo``: round 1 took ~1,866 s (31.1 minutes):
      candidate generation 132 s, DPO 354 s (28 steps), KTO 267 s (38 steps), reward model + PPO
      864 s, held-out generation (4 versions x 60 prompts) 90 s, then ~150 s mostly spent scoring
      each pair of held-out answers with the reward model (now each answer once, a third of the
      work). DPO 0.87 (0/60 empty or looping, 47.3 words), KTO 0.88 (4/60 looping at the token
      limit: "1. 1. 1.1.…", "… because we yawn because we yawn …"; 19.9 words), PPO 0.84 (1/60,
      44.8 words; reward model 0.877 noise-free held-out, 0.917 on the snapshot's noisy test
      labels). The base itself loops on one new prompt ("Boil an egg:" over and over). Round 2,
      each from its round-1 version (4,442 s for both rounds): DPO 0.95, KTO 0.95, PPO 0.94, each
      0/60 empty or looping (9.7, 21.1 and 19.6 words; reward model 0.926); the leaderboard agrees
      in all six. KTO then still trained cut-off thumbs-down answers (70 % of them) with the
      end-of-turn token appended, which also pushes down ending there; the KTO recipe now trains
      them as unfinished prefixes by default (``cut_off_as_prefix``), which the loop leaves off
      until it is measured here.
      Round 1 alone again with each answer scored once (``--rounds 1``, same seed and machine):
      1,803 s (30.05 minutes; 79 s after the held-out labels instead of ~150 s), DPO 0.93 (0/60),
      KTO 0.88 (3/60 looping), PPO 0.88 (1/60), reward model 0.850 (0.8496); the leaderboard agrees.
    - 2026-12-05, a faster machine (candidate generation ~105 s, a DPO step ~9.5 s), seed 0, 60
      held-out prompts. Round 1 with KTO's cut-off answers as prefixes and 10 PPO rollout batches
      (``--set kto.cut_off_as_prefix=true --set ppo.max_steps=10``; DPO still as before): 1,291 s
      (21.5 minutes): DPO 0.85 (2/60 empty or looping, 24.2 words), KTO 0.91 (1/60, 13.9 words),
      PPO 0.89 (1/60, 30.8 words; reward model 0.883), the leaderboard agrees for all three. Then
      the loop's defaults as they are now (DPO's cut-off rejected answers as prefixes too; ``--rounds
      2 --round2-methods dpo,kto,ppo``): round 1 took ~1,230 s (20.5 minutes: generation 114 s, DPO
      267 s, KTO 192 s, reward model + PPO 543 s, held-out ~110 s): DPO 0.90 (1/60 looping, 18.1
      words), KTO 0.89 (3/60, 11.8 words), PPO 0.88 (2/60, 24.9 words), the leaderboard agrees for
      all three; reward model 0.812: 0.976 on the snapshot's test prompts, 0.791 on the pairs of
      held-out answers, where it orders a finished answer above a cut-off one 80 times in 81 but two
      short finished policy answers (3 words against 8) only 155 times in 216, scoring them alike.
      Retrained on the same snapshot with other settings (2026-12-05, offline): two epochs 0.759, lr
      5e-4 0.812, no margin term 0.812; the defaults stay. Round 2 of that run, each from its
      round-1 version (it shared the CPU with those runs and a CI run: no timings): DPO 0.94, 0/60
      empty or looping, 8.3 words; KTO 0.93, 0/60, 17.8 words; PPO 0.90, 1/60 (1.7 %); reward model
      0.916; the leaderboard agrees for all three.
    - 2026-12-06, a slower machine that does not multiply bfloat16 in hardware (everything in float32:
      candidate generation 288 s, a DPO step ~20 s), seed 0, the defaults above, round 1: DPO 0.93
      (0/60 empty or looping, 36.4 words), KTO 0.79 (5/60 empty or looping, 45.4 words), PPO 0.85
      (1/60, 45.7 words), the leaderboard agrees for all three; 2,941 s in all (DPO 582 s, KTO 492 s,
      reward model + PPO 1,033 s). From this run on, ``rm_accuracy`` is measured on candidates
      sampled from the reward model's parent as its training pool was, for prompts it never saw (the
      snapshot's test split and 4 samples per held-out prompt: 264 pairs; generating and scoring
      them took 332 s here), the pairs among the held-out policy answers reported beside it: 0.879
      (policy answers 0.847). The same snapshot, the reward model retrained offline with seeds 1
      and 2 (LoRA init and order): 0.902 and 0.902 (policy answers 0.867 and 0.837). Round 1 again
      with ``--seed 1 --methods ppo`` (other candidates, labels and noise; 1,717 s): PPO 0.79, 0/60
      empty or looping, 50.5 words, the leaderboard agrees (1084 [1051, 1128] against 916); reward
      model 0.891 (248 pairs; base-versus-PPO answers 0.930, 43 pairs).
    - 2026-12-06, a machine with bfloat16 in hardware (candidate generation 178 s, a DPO step ~12.5 s),
      seed 0, ``--rounds 2`` (round 2: DPO), PPO under autocast (``--set ppo.bf16=true``; the default
      since): round 1 took ~2,050 s (DPO 351 s, KTO 306 s, reward model + PPO 835 s with 10 rollout
      batches of ~50 s, held-out generation 122 s, reward-model check 252 s): DPO 0.92 (0/60 empty or
      looping, 20.5 words), KTO 0.85 (6/60 looping at the token limit: "1. 1. 1. …", "no no no …", a
      repeated clause; 21.9 words), PPO 0.875 (2/60, 23.1 words; reward model 0.922 on 244 held-out
      pairs, 0.755 on the 302 pairs among the held-out policy answers), the leaderboard agrees for all
      three. Round 2 (DPO from round 1's, 416 pairs, 52 steps, 447 s): 0.97, 0/60 empty or cut off,
      6.3 words (1176 [1127, 1264] against 824); 2,844 s for both rounds. Its candidate job took 282 s
      for far shorter answers than round 1's (32-74 tokens/s against 190-240): the sampler drew every
      finished row from the whole vocabulary on every step, fixed since (inference/engines/sampling.py).
      The same with that fix, PPO under autocast by default and length-sorted reward scoring (same seed
      and machine; other candidates, as the sampler draws differently once rows finish): round 1 took
      ~1,852 s (30.9 minutes: generation 162 s, DPO 357 s, KTO 318 s, reward model + PPO 723 s,
      held-out generation ~110 s, reward-model check 181 s): DPO 0.91 (0/60, 17.6 words), KTO 0.84
      (5/60 looping, 26.0 words), PPO 0.84 (1/60, 44.1 words; reward model 0.920 on 275 pairs, 0.871
      on 310 pairs of policy answers), the leaderboard agrees for all three. Round 2 (578 s: candidate
      generation 90 s instead of 282 s, DPO 393 s on 402 pairs): 0.95, 1/60 empty (1.7 %), 5.6 words
      (1163 [1103, 1256] against 837); 2,430 s (40.5 minutes) for both rounds.
    - Every bfloat16 run above trained under autocast's weight cache (runtime.cpu_bf16_autocast): each
      forward pass read the trainable weights as first cast, so DPO's logged margins stayed at exactly 0
      for the whole run, PPO drew every rollout from its starting policy and its value model never
      improved; what was saved was the sum of the updates, each computed at the start. 2026-12-06, the
      same machine, seed 0, round 1 with that cache still on (KTO with ``sft_weight`` 4): 1,900 s; DPO
      0.89 (1/60 empty or looping, 20.9 words), KTO 0.89 (1/60, 15.1 words), PPO 0.66 (1/60, 60.7 words;
      scores flat over its 10 batches, 3-8 of 16 rollouts ending), reward model 0.845 (265 pairs; in
      float32); the leaderboard agrees for all three. Then without the cache, the reward model under
      autocast too and no final evaluation pass for it (``--rounds 2``): round 1 took 1,751 s (29.2
      minutes: candidate generation 128 s, DPO 372 s, KTO 309 s, reward model + PPO 651 s, held-out
      generation 103 s, reward-model check 180 s). DPO 0.95 (0/60, 25.2 words; margins 0.08 -> 0.85 over
      the run), KTO 0.81 (1/60, 51.4 words, 14/60 cut off), PPO 0.82 (2/60, 49.8 words; KL to the base
      0.16 -> 1.1), reward model 0.876 (265 pairs; 0.907 on 280 pairs of policy answers); the
      leaderboard agrees for all three. Round 2 (593 s: candidate generation 110 s, DPO 420 s on 402
      pairs): 0.94, 0/60 empty or cut off, 14.4 words (1183 [1142, 1272] against 817); 2,344 s (39.1
      minutes) for both rounds. Round 1 again with ``--seed 1`` (1,345 s: generation 102 s, DPO 258 s,
      KTO 198 s, reward model + PPO 507 s, reward-model check 156 s): DPO 0.90 (0/60, 30.6 words), KTO
      0.78 (1/60, 53.7 words), PPO 0.78 (0/60, 51.1 words), reward model 0.836 (262 pairs, under the
      0.85 target; 0.825 on policy answers); the leaderboard agrees for all three. Content (one
      sentence), DPO, seed 0 (beside a CI run, so no timings): 0.87, 0/60 empty, 28.3 words, the
      leaderboard agrees (1120 [1068, 1184] against 880).
    - 2026-12-06, an AMD EPYC with AVX512-BF16 (no AMX; a DPO step ~14 s), ``--seed 1``, round 1, the defaults
      above with the reward model at rank 16: 1,717 s (28.6 minutes: candidate generation 135 s, DPO 402 s,
      KTO 321 s, reward model 182 s + PPO ~400 s (10 rollout batches of ~40-60 s), held-out generation ~90 s,
      reward-model check 163 s). DPO 0.925 (0/60, 32.1 words), KTO 0.80 (4/60 looping at the token limit,
      "el Salvador, el Salvador, …"; 49.3 words), PPO 0.89 (2/60, 27.2 words), reward model 0.905 (262 pairs;
      0.768 on policy answers); the leaderboard agrees for all three. Its reward model retrained offline on the
      same snapshot with other training seeds (LoRA init, head init, order): 0.756 and 0.817 (seeds 1, 2), so the
      0.905 was the lucky draw; at rank 32 0.920, 0.866, 0.870 and 0.878 (seed 3): the rank the loop uses since
      (batches of 4 at rank 16: 0.916, 0.882, 0.866; both, seed 1: 0.889). PPO's frozen base weights held in
      bfloat16 instead of autocast casting them on each forward pass (the same rollouts and scores): 2 rollout
      batches in 83.6 s against 80.5 s, no faster here, so not kept. Round 1 with the rank-32 reward model,
      seed 0, the same machine: 1,725 s (28.7 minutes: generation 136 s, DPO 373 s, KTO 282 s, reward model 186 s
      + PPO ~426 s, reward-model check 187 s): DPO 0.917 (1/60 empty or looping, 31.2 words), KTO 0.817 (3/60,
      43.3 words), PPO 0.842 (1/60, 42.8 words), reward model 0.860 (264 pairs; 0.833 on policy answers); the
      leaderboard agrees for all three.
    - 2026-12-06, a faster AMD EPYC (candidate generation 84 s, a DPO step ~10 s), round 1. ``--seed 2`` (rank-32
      reward model in batches of 8; the loop was paused ~210 s for a load benchmark, which also slowed its candidate
      generation to 228 s): ~1,220 s of work (DPO ~225 s, KTO 207 s, reward model 102 s + PPO ~250 s, reward-model
      check 124 s). DPO 0.95 (0/60 empty or looping, 29.2 words), KTO 0.925 (1/60, 35.4 words), PPO 0.725 (1/60,
      54.6 words), reward model 0.861 (244 pairs; 0.851 on policy answers); the leaderboard agrees for all three.
      Retrained on its snapshot (seeds 0-5), the reward model in batches of 4 reached a mean of 0.894 against 0.859
      in batches of 8 (see the reward model's settings below): the loop's default since. Then ``--seed 3`` with it:
      1,148 s (19.1 minutes: generation 84 s, DPO 297 s, KTO 201 s, reward model 122 s (64 steps) + PPO ~259 s,
      held-out generation ~64 s, reward-model check 103 s): DPO 0.917 (0/60, 29.7 words), KTO 0.867 (3/60 looping
      at the token limit, repeated sentences such as "They are attracted to the blood of humans and animals because
      they are attracted to …", the prompt KTO also looped on at seed 2; 34.0 words), PPO 0.942 (1/60, 17.3 words),
      reward model 0.918 (244 pairs; 0.904 on policy answers); the leaderboard agrees for all three.
      ``--seed 4 --rounds 2`` (round 2: DPO), the same machine: 1,533 s (25.5 minutes) for both rounds. Round 1
      (generation 82 s, DPO 282 s, KTO 177 s, reward model + PPO 363 s, reward-model check 113 s): DPO 0.933 (0/60,
      29.1 words), KTO 0.675 (1/60, 61.3 words, 24/60 cut off: under the 0.75 target), PPO 0.667 (0/60, 62.4 words,
      23/60 cut off: under 0.7, with a reward model at 0.911 on 259 pairs, 0.918 on policy answers); the leaderboard
      agrees for all three. Round 2 (~456 s: generation 62 s, DPO 354 s on 442 pairs, 56 steps): 0.95, 0/60 empty
      or cut off, 16.6 words (1151 [1112, 1214] against 849).
    - 2026-12-06, a slower AMD EPYC (a DPO step ~14 s, a KTO step ~8 s), ``--seed 4`` again, round 1, the defaults
      then (PPO with a linear decay and KL 0.05; the candidate job shared the CPU for 5 minutes): DPO 471 s, KTO
      330 s, reward model 213 s + PPO 390 s, held-out generation 99 s, reward-model check 162 s. DPO 0.925 (0/60),
      KTO 0.792 (4/60 looping at the token limit), PPO 0.833 (1/60, 41.2 words; reward model 0.900 on 259 pairs),
      the leaderboard agrees for all three. The same seed had given KTO 0.675 and PPO 0.667 on the faster machine:
      the spread is the run's (another CPU's numerics and thread timing), not the seed's data. Offline on this
      run's snapshots, greedy answers to the 60 held-out prompts (the loop's own KTO 0.808 and PPO 0.85 there): KTO
      at a constant learning rate 0.683 (0/60, 56.6 words), KTO with ``sft_weight`` 8 0.825 (3/60); neither kept.
      PPO: see its settings below (a constant rate and KL 0.1 since).
      ``--seed 5``, round 1, PPO at the constant rate (the same machine, quiet): 1,722 s (28.7 minutes: generation
      117 s, DPO 435 s, KTO 267 s, reward model + PPO 633 s, held-out generation ~80 s, reward-model check 161 s).
      DPO 0.933 (0/60, 25.5 words), KTO 0.70 (3/60 looping, 58.8 words, 22/60 cut off: under the 0.75 target), PPO
      0.942 (0/60, 16.4 words; reward model 0.947 on 247 pairs, 0.898 on policy answers); the leaderboard agrees
      for all three. Its thumbs had 60 thumbs-up rows kept (finished answers), 11 of them noise (over 40 words):
      thumbs-up answers are rare, so one flipped thumb in ten lands there often. With three annotators per
      response merged by majority (``thumb_votes``, the loop's default since; ``--methods kto``, the same seed and
      candidates, beside a CI run, so no timings): 62 kept, 6 of them noise; KTO 0.783 (2/60 looping, 51.1 words,
      14/60 cut off), the leaderboard agrees. One run each, within KTO's run-to-run spread.
    - 2026-12-06, an AMD EPYC with AVX2 only (no bfloat16 in hardware: everything in float32; candidate generation
      ~258 s, a DPO step ~25 s, a KTO step ~13 s), three thumb votes. ``--seed 6 --methods kto`` at beta 0.5: 0.758
      (1/60 looping, 17/60 cut off, 49.6 words; 523 s of KTO), the leaderboard agrees. Retrained offline on its
      snapshot at beta 0.1 (the same harness gives the loop's run 0.758): 0.883 (1/60, 4/60 cut off, 35.0 words):
      KTO's default since. ``--seed 7 --methods kto`` with it: 0.908 (1/60 looping, 1/60 cut off, 22.5 words; 559 s
      of KTO), the leaderboard agrees. ``--seed 4``, round 1, every default as it is now: 3,124 s (52 minutes:
      generation 260 s, DPO 754 s, KTO 583 s, reward model + PPO 1,051 s, held-out generation ~190 s, reward-model
      check 262 s). DPO 0.883 (1/60 looping, 4/60 cut off, 38.9 words), KTO 0.917 (2/60 looping: "1. 1. 1.1.1.…"
      and the mosquito prompt's repeated clause; 17.6 words; the same seed gave 0.675, 0.792 and 0.775 at beta
      0.5), PPO 0.908 (1/60, 20.9 words), reward model 0.903 (238 pairs; 0.823 on policy answers); the leaderboard
      agrees for all three.
    - PPO with the reward model read as it was trained (2026-12-03, ``scoring.EndOfTurnReward``; lr
      2e-4, value model at 1e-5, 20 rollout batches of 16 in 2 minibatches, 2 PPO epochs,
      response_length 64, kl 0.05, missing-EOS penalty 1): shorter-wins 0.93, 0/30 empty and none cut
      off (the base: 19/30 cut off), 20.2 words on average, reward model 0.914 noise-free held-out
      accuracy, the leaderboard agrees (1163 [1095, 1292] against 837). EOS in 4-7 of 16 rollouts in
      the first batches, 14-16 from the 12th on; KL to the base 5-7.6 at the end. Reward model +
      PPO took 1,637 s (a CI run shared the CPU during generation and part of the reward model).
      Every PPO run below scored rollouts where TRL reads them, at the EOS or mid-sentence, which
      the reward model never saw: answers cut off at 64 tokens scored +1.14 on average and finished
      short ones +0.14, which cancelled the missing-EOS penalty, so the policy had no reason to stop.
    - PPO from it (lr 1e-4, 24 rollout batches of 8, response_length 64, kl 0.05, missing-EOS
      penalty 1; 2,090 s with the reward model): shorter-wins 0.53, 0/30 empty, mean 76.3 words
      against the base's ~77 (57 % cut off against 63 %); the leaderboard agrees (1012 against
      988, overlapping intervals). Most rollouts hit the 64-token limit (0-3 of 8 ended with EOS)
      and the scores did not trend up in 24 batches: PPO needs far more rollouts than this CPU
      gives it in the loop's budget. The run (generation, labels, reward, PPO, held-out) took 45
      minutes on 2 idle cores.
    - PPO with bigger rollout batches (16 per batch, 2 minibatches, 2 PPO epochs, 16 batches =
      256 episodes, lr 1e-4; reward model 0.873 held-out): shorter-wins 0.48, 1/30 empty; the
      score stayed near 0 and 4-7 of 16 rollouts ended with EOS from the first batch to the last
      (2026-12-02). Neither batch shape moves the policy within this CPU's budget.
    - The same with Monte Carlo advantages and a fresh value head (``lam=1.0``,
      ``value_model_path`` = the base: REINFORCE with a learned baseline, so the end-of-answer
      reward reaches every token instead of fading as 0.95**k), 256 episodes (2026-12-02):
      shorter-wins 0.57, 0/30 empty, 74 words on average (63 % cut off, as the base), reward model
      0.865, the leaderboard agrees (1012 [983, 1051] against 988). The score stayed between -0.35
      and +0.17 and 3-7 of 16 rollouts ended with EOS throughout, while the KL to the base rose to
      2-2.8: a better critic alone does not fix it here.

    With 64 new tokens (earlier runs; 96 % of base answers cut off):

    - DPO 2 epochs: shorter-wins 0.77; with an SFT term (lr 3e-4) 0.73. Content (one sentence),
      1 epoch: 0.65; round 2 from it: 0.83, but 2/30 held-out answers looped (degenerate).
    - KTO (lr 2e-4, 1 epoch, 49 up / 247 down, balanced weights): 0.78, but 4/30 answers looped.
    - Reward model (LoRA r16, lr 2e-4, 2 epochs, all ranking pairs): 0.88 noise-free held-out
      pairwise accuracy (0.72 on the snapshot's own noisy test labels).
    - PPO (lr 5e-5, 2 epochs = 7 rollout batches of 8, kl 0.05, missing-EOS penalty 1): 0.47,
      the policy did not move. It had seen 28 of 77 prompts: the PPO recipe now keeps every
      prompt (cut-off stored answers no longer drop theirs), so 2 epochs are ~20 rollout batches;
      not measured since. At 128 tokens a reward step takes ~25 s here (54 steps: ~22 min).
    - ``drop_truncated: chosen`` everywhere: dropping every row with a cut-off side leaves almost
      nothing to learn from.
    """
    common: dict[str, Any] = {
        "device": "cpu",
        "torch_threads": threads,
        "save_steps": 1000,
        "logging_steps": 5,
        "lora_r": 16,
        "lora_alpha": 32,
        "max_length": 256,
        "seed": 0,
        # Cut-off answers are never trained as good ones; cut-off rejected answers stay as negatives.
        "drop_truncated": "chosen",
    }
    # The loop judges every version on held-out prompts itself: the recipes' own pass over the snapshot's
    # test split would only cost time (41 s for KTO on a fast machine; 26 s for the reward model, whose
    # accuracy the loop measures on those test prompts and the held-out ones, without label noise).
    no_final_eval = {"final_eval": False}
    if tiny:
        common.update(max_length=128, lora_r=8, lora_alpha=16)
    per_method: dict[str, dict[str, Any]] = {
        "dpo": {
            "beta": 0.1,
            "learning_rate": 2e-4,
            "num_train_epochs": 1.0,
            "loss_type": ["sigmoid", "sft"],
            "loss_weights": [1.0, 1.0],
            "per_device_train_batch_size": 8,
            **no_final_eval,
        },
        "kto": {
            "beta": 0.5,
            "learning_rate": 2e-4,
            "num_train_epochs": 1.0,
            "per_device_train_batch_size": 8,
            # 4, not 1: fewer answers looping at the token limit (offline on one thumbs snapshot, 2026-12-06:
            # 6/60 -> 3/60; in the loop that day, 1/60 in both runs, at 0.89 and 0.81)
            "sft_weight": 4.0,
            # The KL estimate (KTO's reference point) was 0 after clamping in every run above, so
            # the loss with the point fixed at 0 is the same, without its two passes per step.
            "loss_type": "apo_zero_unpaired",
            **no_final_eval,
        },
        "reward": {
            "learning_rate": 2e-4,
            "num_train_epochs": 1.0,
            "per_device_train_batch_size": 8,
            **no_final_eval,
        },
        "ppo": {
            "learning_rate": 2e-4,
            "value_learning_rate": 1e-5,  # the value model is trained in full, not through LoRA
            "per_device_train_batch_size": 16,
            "num_mini_batches": 2,
            "num_ppo_epochs": 2,
            "response_length": 64,
            "num_train_epochs": 2.0,
            "max_steps": 10,  # rollout batches of 16 (160 episodes, ~2 passes over the ~80 prompts)
            "kl_coef": 0.05,
            "missing_eos_penalty": 1.0,
            "eval_prompts": 0,
        },
    }
    if not tiny and modeling.cpu_has_native_bf16():
        # bfloat16 autocast where the CPU multiplies it in hardware (a DPO-sized step 2.1x faster; a PPO
        # rollout batch 41 s against 51 s in float32; the reward model's 30 steps 171 s against 259 s).
        # Rewards are scored in float32 whatever the policy runs in (scoring.py). The reward model was
        # left in float32 until 2026-12-06, after its training under autocast failed (2026-12-04: 0.65
        # on the snapshot's test pairs, PPO did not move): autocast's weight cache had kept every
        # forward pass on the starting weights (runtime.cpu_bf16_autocast). Without the cache, the same
        # snapshot trains to the same margins as in float32 and 0.857 held-out accuracy (float32 0.845).
        for settings in per_method.values():
            settings["bf16"] = True
    if tiny:
        # A 64-wide model: full fine-tuning (LoRA r=8 on it barely moves in a few dozen steps).
        # Plain DPO collapsed on one seed (both log-probs pushed down, answers that never stop):
        # an SFT term on the chosen answers keeps it anchored (0.28 -> 0.86 on that seed).
        per_method["dpo"].update(
            use_lora=False,
            learning_rate=5e-4,
            num_train_epochs=3.0,
            loss_type=["sigmoid", "sft"],
            loss_weights=[1.0, 1.0],
        )
        per_method["kto"].update(learning_rate=1e-3, num_train_epochs=3.0)
        per_method["reward"].update(learning_rate=1e-3, num_train_epochs=2.0)
        per_method["ppo"].update(response_length=16, learning_rate=1e-4, max_steps=-1)
    else:
        # The reward model at LoRA rank 32, not 16 (the seed-1 sweep above), in batches of 4, not 8 (twice the steps,
        # the same time): on the seed-2 loop's snapshot (262 pairs; 244 held-out), training seeds 0-5 (LoRA init,
        # head init, order) gave 0.898, 0.861, 0.840, 0.943, 0.877, 0.947 held-out accuracy (mean 0.894) against
        # 0.861, 0.853, 0.840, 0.889, 0.893, 0.820 (mean 0.859) in batches of 8; at lr 1e-4 0.820, 0.816, 0.844,
        # 0.869 (seeds 0-3).
        per_method["reward"].update(lora_r=32, lora_alpha=64, per_device_train_batch_size=4)
        # PPO at a constant learning rate, KL coefficient 0.1: with the linear decay, the policy took off only in
        # the last of its 10 rollout batches, when the rate had fallen to a fifth. On the seed-4 snapshot (its
        # reward model at 0.900), PPO seeds 0 and 1: 0.917 and 0.95 held-out, 0/60 empty or looping (26.3 and 18.0
        # words), against 0.85 and 0.875 (1/60 each; 41.4 and 28.8 words) linear; constant at KL 0.05: 0.90 and
        # 0.908, but 3/60 looping on seed 1 ('The answer is: "The answer is: …').
        per_method["ppo"].update(lr_scheduler_type="constant", kl_coef=0.1)
        # KTO at beta 0.1, not 0.5: with the SFT term anchoring the thumbs-up answers (sft_weight 4), the less
        # saturated loss keeps pushing the rambling thumbs-down answers down (their log-ratio -16 at the end
        # against -10). Seed 6's thumbs snapshot, offline: 0.883 held-out (1/60 degenerate, 4/60 cut off, 35.0
        # words) against 0.758 (1/60, 17/60 cut off, 50.4 words) at 0.5; the seed-7 loop with it: 0.908 (1/60, 22.5
        # words). Beta 0.5 dates from KTO without the SFT term, when every answer's likelihood fell.
        per_method["kto"].update(beta=0.1)
    return {**common, **per_method[method]}


# -- small helpers -----------------------------------------------------------------------------
def _wait(
    model, pk: int, *, what: str, timeout: float, check: Callable[[], None] | None = None, poll: float = 2.0
):
    """Poll a job row (GenerationJob / TrainingRun) until it leaves queued/running."""
    from inference.models import JobStatus

    deadline = time.monotonic() + timeout
    last = ""
    while True:
        row = model.objects.get(pk=pk)
        if row.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
            if row.status != JobStatus.SUCCEEDED:
                raise RuntimeError(f"{what} {pk} ended {row.status}: {row.error}\n{row.log_tail[-3000:]}")
            return row
        done = getattr(row, "progress_done", None) or getattr(row, "progress_step", 0)
        total = getattr(row, "progress_total", 0)
        line = f"{what} {pk}: {row.status} {done}/{total}"
        if line != last:
            logger.info(line)
            last = line
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} {pk} did not finish within {timeout:.0f}s")
        time.sleep(poll)


def load_prompt_set(options: LoopOptions) -> tuple[list[dict], list[dict]]:
    rows = [
        json.loads(line) for line in PROMPTS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    train = [r for r in rows if r["metadata"]["split"] == "train"][: options.train_prompts]
    held = [r for r in rows if r["metadata"]["split"] == "heldout"][: options.heldout_prompts]
    return train, held


@dataclass
class Context:
    options: LoopOptions
    base_url: str
    admin: Any
    admin_api: ApiClient
    accounts: list[Account]
    base: Any  # ModelVersion
    check: Callable[[], None]
    lines: list[ResultLine] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    log: list[dict[str, Any]] = field(default_factory=list)
    #: {(parent version id, round): the ranking project whose candidates a job generated}
    pools: dict[tuple[int, int], Any] = field(default_factory=dict)

    def note(self, **fields: Any) -> None:
        fields["t"] = round(time.perf_counter() - self.started, 1)
        self.log.append(fields)
        logger.info("%s", json.dumps(fields))


# -- steps ---------------------------------------------------------------------------------------
def setup_accounts(n: int) -> tuple[Any, Account, list[Account]]:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    admin_account = Account("loop-admin", f"pw-admin-{random.randrange(10**9)}")
    admin = User.objects.create_superuser(
        username=admin_account.username, password=admin_account.password, email=""
    )
    accounts = []
    for i in range(n):
        acc = Account(f"annotator{i + 1}", f"pw-annotator{i + 1}-{random.randrange(10**6)}")
        User.objects.create_user(username=acc.username, password=acc.password)
        accounts.append(acc)
    return admin, admin_account, accounts


def make_project(
    ctx: Context, name: str, kind: str, k: int, prompts: list[dict], guidelines: str, *, votes: int = 1
) -> Any:
    from django.contrib.auth import get_user_model

    from feedback.services.projects import membership_set, project_create

    project = project_create(
        name=name,
        task_kind=kind,
        responses_per_item=k,
        annotations_required=votes,
        guidelines=guidelines,
        allow_ties=True,
        lease_ttl_seconds=600,
    )
    membership_set(project=project, user=ctx.admin, role="admin")
    User = get_user_model()
    for acc in ctx.accounts:
        membership_set(project=project, user=User.objects.get(username=acc.username), role="annotator")
    if prompts:  # through the REST API, as an admin would
        report = ctx.admin_api.post_json(f"/projects/{project.pk}/prompts/import/", {"rows": prompts})
        if report["rows_imported"] != len(prompts):
            raise RuntimeError(
                f"prompt import into {name} kept {report['rows_imported']} of {len(prompts)}: {report}"
            )
    return project


def generate(ctx: Context, project: Any, versions: list[Any], *, n: int, greedy: bool, pairing: str) -> Any:
    from inference.engines.base import SamplingParams
    from inference.models import GenerationJob
    from inference.services import generation_job_create

    o = ctx.options
    params = SamplingParams(
        max_new_tokens=o.max_new_tokens,
        temperature=0.0 if greedy else o.temperature,
        top_p=1.0 if greedy else 0.95,
        seed=o.seed,
    )
    job = generation_job_create(
        project=project,
        model_versions=versions,
        n=n,
        sampling_params=params,
        pairing=pairing,
        chunk_size=32,
        created_by=ctx.admin,
    )
    return _wait(GenerationJob, job.pk, what="generation job", timeout=o.job_timeout_s, check=ctx.check)


def copy_candidates(ctx: Context, source: Any, target: Any) -> int:
    """Reuse the generated candidates in another project (the candidate import service)."""
    from feedback.importing import CandidateRow
    from feedback.models import Candidate
    from feedback.services.imports import candidates_import

    rows = [
        CandidateRow(
            location=f"candidate {c.pk}",
            messages=c.prompt.messages,
            text=c.text,
            model=c.model_version.name,
            finish_reason=c.finish_reason,
            metadata=c.prompt.metadata,
        )
        for c in Candidate.objects.filter(prompt__project=source)
        .select_related("prompt", "model_version")
        .order_by("id")
    ]
    report = candidates_import(
        project=target,
        rows=rows,
        model_name=None,
        source=f"project {source.pk}",
        file_format="jsonl",
        created_by=ctx.admin,
    )
    return report.items_created


def annotate_project(ctx: Context, project: Any, preference: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    reports = annotate_all(
        ctx.base_url,
        ctx.accounts,
        project_id=project.pk,
        kind=project.task_kind,
        preference=get_preference(preference),
        noise=ctx.options.noise,
        seed=ctx.options.seed + project.pk,
    )
    errors = [e for r in reports for e in r.errors]
    submitted = sum(r.submitted for r in reports)
    if errors:
        logger.warning("annotation errors in %s: %s", project.name, errors[:3])
    return {
        "project": project.name,
        "submitted": submitted,
        "errors": len(errors),
        "seconds": time.perf_counter() - t0,
    }


def export(
    ctx: Context, project: Any, kind: str, name: str, *, test_fraction: float = 0.1, aggregation: str = "all"
) -> Any:
    from feedback.exports.services import snapshot_create, snapshot_write

    spec = {
        "kind": kind,
        "project_ids": [project.pk],
        "aggregation": aggregation,
        "ranking_pairs": "all",
        "ties": "drop",
        "include_truncated": True,  # flagged, so the recipe decides (it drops them by default)
        "include_margin": True,
    }
    snapshot = snapshot_create(
        name=name, spec=spec, seed=ctx.options.seed, test_fraction=test_fraction, created_by=ctx.admin
    )
    snapshot_write(snapshot=snapshot, formats=("jsonl",))
    snapshot.refresh_from_db()
    return snapshot


def train(
    ctx: Context, method: str, snapshot: Any, parent: Any, *, reward_snapshot: Any = None
) -> tuple[Any, Any]:
    """Queue a run through the training service (Celery, gpu queue) and wait. Returns (run, reward run)."""
    from training.models import TrainingRun
    from training.services import training_pipeline_create_rm_ppo, training_run_create

    o = ctx.options
    overrides = o.recipe_overrides
    if method == "ppo":
        rm_cfg = {**recipe_defaults("reward", tiny=o.tiny, threads=o.threads), **overrides.get("reward", {})}
        ppo_cfg = {**recipe_defaults("ppo", tiny=o.tiny, threads=o.threads), **overrides.get("ppo", {})}
        rm, ppo = training_pipeline_create_rm_ppo(
            snapshot=reward_snapshot or snapshot,
            ppo_snapshot=snapshot,
            parent_version=parent,
            reward_config=rm_cfg,
            ppo_config=ppo_cfg,
            created_by=ctx.admin,
        )
        rm = _wait(TrainingRun, rm.pk, what="reward run", timeout=o.job_timeout_s, check=ctx.check, poll=3)
        ppo = _wait(TrainingRun, ppo.pk, what="ppo run", timeout=o.job_timeout_s, check=ctx.check, poll=3)
        return ppo, rm
    cfg = {**recipe_defaults(method, tiny=o.tiny, threads=o.threads), **overrides.get(method, {})}
    run = training_run_create(
        method=method, parent_version=parent, snapshot=snapshot, config=cfg, created_by=ctx.admin
    )
    run = _wait(TrainingRun, run.pk, what=f"{method} run", timeout=o.job_timeout_s, check=ctx.check, poll=3)
    return run, None


def version_of(run: Any) -> Any:
    from inference.models import ModelVersion

    return ModelVersion.objects.get(training_run=run)


def eval_items(project: Any) -> list[tuple[int, dict[int, tuple[str, bool]]]]:
    """[(prompt id, {version id: (text, truncated)})] for every item of the held-out project: each
    item shows one answer of each version to one prompt."""
    from feedback.models import ItemCandidate

    items: dict[int, tuple[int, dict[int, tuple[str, bool]]]] = {}
    for slot in (
        ItemCandidate.objects.filter(item__project=project)
        .select_related("candidate", "item")
        .order_by("item_id", "position")
    ):
        c = slot.candidate
        entry = items.setdefault(slot.item_id, (slot.item.prompt_id, {}))
        entry[1].setdefault(c.model_version_id, (c.text, c.finish_reason == "length"))
    return list(items.values())


def leaderboard_of(ctx: Context, project: Any) -> dict[str, dict[str, Any]]:
    """The project's Bradley-Terry leaderboard, read over the REST API: {version name: standing}."""
    rows = ctx.admin_api.get_json(f"/projects/{project.pk}/leaderboard/", bootstrap=100)
    if isinstance(rows, dict) and "results" in rows:
        rows = rows["results"]
    return {r["model_version"]: r for r in rows}


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


# -- one preference, one round ------------------------------------------------------------------
def run_round(
    ctx: Context,
    preference: str,
    round_no: int,
    parents: dict[str, Any],
    train_prompts: list[dict],
    held_prompts: list[dict],
) -> dict[str, Any]:
    """Label candidates of each parent, train each method from its parent, evaluate. Returns new versions."""
    o = ctx.options
    pref = get_preference(preference)
    tag = f"{preference}-r{round_no}"
    new_versions: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    extras: dict[str, dict[str, Any]] = defaultdict(dict)
    # Group methods by the version they start from: one candidate pool per parent version.
    by_parent: dict[int, list[str]] = defaultdict(list)
    for method, parent in parents.items():
        by_parent[parent.pk].append(method)
    for methods in by_parent.values():
        parent = parents[methods[0]]
        t_gen = time.perf_counter()
        guidelines = f"Hidden preference of the simulated annotators: {pref.description}"
        needs_rank = any(m in ("dpo", "ppo") for m in methods)
        needs_thumbs = "kto" in methods
        pool = ctx.pools.get((parent.pk, round_no))
        if pool is None:
            rank_project, job = sample_pool(
                ctx, f"{tag} ranking from {parent.name}", parent, train_prompts, guidelines
            )
            ctx.pools[(parent.pk, round_no)] = rank_project
            ctx.note(
                step="generate",
                project=rank_project.name,
                prompts=job.progress_done,
                items=job.items_created,
                seconds=round(time.perf_counter() - t_gen, 1),
            )
        else:
            # Same version, same prompts: the candidates another preference's annotators judged
            # are imported (candidate import service) instead of being generated again.
            rank_project = make_project(
                ctx, f"{tag} ranking from {parent.name}", "ranking", o.candidates, [], guidelines
            )
            items = copy_candidates(ctx, pool, rank_project)
            ctx.note(step="reuse candidates", project=rank_project.name, source=pool.name, items=items)
        gen_s = time.perf_counter() - t_gen
        thumbs_project = None
        if needs_thumbs:
            thumbs_project = make_project(
                ctx,
                f"{tag} thumbs from {parent.name}",
                "binary",
                1,
                [],
                guidelines,
                votes=min(o.thumb_votes, o.annotators),  # distinct annotators per item
            )
            copy_candidates(ctx, rank_project, thumbs_project)
        t_lab = time.perf_counter()
        if needs_rank:
            ctx.note(step="annotate", **annotate_project(ctx, rank_project, preference))
        if thumbs_project is not None:
            ctx.note(step="annotate", **annotate_project(ctx, thumbs_project, preference))
        lab_s = time.perf_counter() - t_lab
        pref_snap = unpaired_snap = None
        if needs_rank:
            pref_snap = export(
                ctx, rank_project, "preference", f"{tag} pairs from {parent.name}", test_fraction=0.15
            )
            ctx.note(
                step="export",
                snapshot=pref_snap.pk,
                rows=pref_snap.row_counts,
                hash=pref_snap.content_hash[:12],
            )
        if thumbs_project is not None:
            unpaired_snap = export(
                ctx,
                thumbs_project,
                "unpaired",
                f"{tag} thumbs from {parent.name}",
                aggregation="majority",  # one label per response (with one vote, that vote)
            )
            ctx.note(step="export", snapshot=unpaired_snap.pk, rows=unpaired_snap.row_counts)
        for method in methods:
            t0 = time.perf_counter()
            snap = unpaired_snap if method == "kto" else pref_snap
            run, rm_run = train(ctx, method, snap, parent)
            version = version_of(run)
            new_versions[method] = version
            seconds[method] = gen_s / len(methods) + lab_s / len(methods) + time.perf_counter() - t0
            extras[method].update(
                run=run.pk,
                train_seconds=round(time.perf_counter() - t0, 1),
                version=version.name,
                snapshot=snap.pk,
                train_rows=snap.row_counts,
            )
            if rm_run is not None:
                extras[method]["reward_run"] = rm_run.pk
                extras[method]["_rm_dir"] = str(Path(rm_run.output_dir) / "final")
                extras[method]["_rm_test_prompts"] = _test_prompt_groups(pref_snap, rank_project)
            ctx.note(
                step="train",
                method=method,
                run=run.pk,
                version=version.name,
                seconds=extras[method]["train_seconds"],
            )

    # Held-out: base versus every new version in one ranking item per prompt.
    t_eval = time.perf_counter()
    versions = [ctx.base, *new_versions.values()]
    eval_project = make_project(
        ctx,
        f"{tag} held-out",
        "ranking",
        len(versions),
        held_prompts,
        f"Held-out comparison. Hidden preference: {pref.description}",
    )
    greedy = o.eval_samples == 1
    generate(ctx, eval_project, versions, n=o.eval_samples, greedy=greedy, pairing="versus")
    ctx.note(step="annotate", **annotate_project(ctx, eval_project, preference))
    items = eval_items(eval_project)
    standings = leaderboard_of(ctx, eval_project)
    eval_s = time.perf_counter() - t_eval
    base_rating = standings[ctx.base.name]["rating"] if ctx.base.name in standings else None
    from feedback.models import Prompt

    messages = {p.pk: p.messages for p in Prompt.objects.filter(project=eval_project)}
    for method, version in new_versions.items():
        both = [
            (ans[version.pk], ans[ctx.base.pk])
            for _, ans in items
            if version.pk in ans and ctx.base.pk in ans
        ]
        if not both:
            raise RuntimeError(f"no held-out item compares {version.name} with {ctx.base.name}")
        new = [a for a, _ in both]
        base = [b for _, b in both]
        wr = win_rate(pref, new, base)
        st = standings.get(version.name)
        agrees = None
        if st is not None and base_rating is not None:
            agrees = (st["rating"] > base_rating) == (wr > 0.5)
        extra = {k: v for k, v in extras[method].items() if not k.startswith("_")}
        extra.update(
            round=round_no,
            bt_rating=None if st is None else round(st["rating"], 1),
            bt_ci=None
            if st is None or st["ci_low"] is None
            else [round(st["ci_low"], 1), round(st["ci_high"], 1)],
            bt_rating_base=None if base_rating is None else round(base_rating, 1),
            leaderboard_agrees=agrees,
            truncated_rate=round(sum(t for _, t in new) / len(new), 4),
            mean_words=round(sum(len(t.split()) for t, _ in new) / len(new), 1),
            base_empty_rate=round(empty_rate(base), 4),
            base_truncated_rate=round(sum(t for _, t in base) / len(base), 4),
            heldout_comparisons=len(both),
        )
        acc = None
        rm_s = 0.0
        if "_rm_dir" in extras[method]:
            t_rm = time.perf_counter()
            # Held-out accuracy: candidates sampled from the parent as the training pool was, for prompts
            # the reward model never saw (the snapshot's test split and the held-out prompts), every pair
            # with a strict preference, judged without noise. Reported beside it: the same on the pairs
            # among the held-out answers of the base and the new versions (short finished answers the
            # reward model was not trained on; PPO's policy drifts towards them).
            pool = rm_check_pool(ctx, tag, parents[method], held_prompts)
            answers = [(messages[pid], list(ans.values())) for pid, ans in items]
            pair_sets = {
                "heldout": preference_pairs(preference, [*extras[method]["_rm_test_prompts"], *pool]),
                "policy_answers": preference_pairs(preference, answers),
            }
            accs = rm_accuracies(extras[method]["_rm_dir"], pair_sets)
            acc = accs["heldout"]
            rm_s = time.perf_counter() - t_rm
            extra.update(
                rm_accuracy_pairs=len(pair_sets["heldout"]),
                rm_accuracy_policy_answers=accs["policy_answers"],
                rm_accuracy_policy_answers_pairs=len(pair_sets["policy_answers"]),
                rm_check_seconds=round(rm_s, 1),
            )
        line = ResultLine(
            model="tiny-random" if o.tiny else "SmolLM2-135M-Instruct",
            preference=preference,
            method=method,
            win_rate=wr,
            rm_accuracy=acc,
            empty_rate=empty_rate(new),
            seconds=seconds[method] + eval_s / max(1, len(new_versions)) + rm_s,
            round=round_no,
            extra=extra,
        )
        ctx.lines.append(line)
        print(line.to_json(), flush=True)
    return new_versions


def sample_pool(
    ctx: Context, name: str, parent: Any, prompts: list[dict], guidelines: str
) -> tuple[Any, Any]:
    """A ranking project of the prompts with ``candidates`` answers sampled from the parent for each
    (a generation job). Returns (project, job)."""
    o = ctx.options
    project = make_project(ctx, name, "ranking", o.candidates, prompts, guidelines)
    job = generate(ctx, project, [parent], n=o.candidates, greedy=False, pairing="samples")
    return project, job


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


def _test_prompt_groups(snapshot: Any, project: Any) -> Groups:
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


# -- the whole loop ----------------------------------------------------------------------------
def register_base(options: LoopOptions, data_dir: Path) -> Any:
    from inference.services import model_version_register

    if options.model_path:
        path = options.model_path
        name = Path(path).name
    elif options.tiny:
        from .tiny_base import build_tiny_base

        path = str(build_tiny_base(data_dir / "models" / "tiny-base", seed=options.seed))
        name = "tiny-base"
    else:
        from inference.engines.demo_model import ensure_demo_model

        path = str(ensure_demo_model())
        name = "smollm2-135m-instruct"
    settings: dict[str, Any] = {"device": "cpu", "batch_size": 64}
    if not options.tiny and modeling.cpu_has_native_bf16():
        # bfloat16 weights where the CPU multiplies them in hardware: 64 sampled answers of up to 128
        # tokens in 21.7 s instead of 35.8 s here. New versions inherit their parent's settings.
        settings["dtype"] = "bfloat16"
    return model_version_register(
        name=name,
        base_model=path,
        engine="transformers",
        engine_settings=settings,
        is_demo=not options.tiny,
    )


def run_loop(
    options: LoopOptions, *, base_url: str, data_dir: Path, check: Callable[[], None]
) -> list[ResultLine]:
    random.seed(options.seed)
    admin, admin_account, accounts = setup_accounts(options.annotators)
    admin_api = ApiClient(base_url)
    admin_api.login(admin_account)
    base = register_base(options, data_dir)
    ctx = Context(
        options=options,
        base_url=base_url,
        admin=admin,
        admin_api=admin_api,
        accounts=accounts,
        base=base,
        check=check,
    )
    train_prompts, held_prompts = load_prompt_set(options)
    ctx.note(
        step="setup",
        base=base.name,
        train_prompts=len(train_prompts),
        heldout_prompts=len(held_prompts),
        annotators=len(accounts),
    )
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Round 1 for every preference first, then the second rounds (each from its round-1 version).
    latest: dict[str, dict[str, Any]] = {}
    for round_no in range(1, options.rounds + 1):
        for preference in options.preferences:
            methods = options.methods_for(preference)
            if round_no == 1:
                parents = {m: base for m in methods}
            else:
                parents = {m: v for m, v in latest.get(preference, {}).items() if m in options.round2_methods}
            if not parents:
                continue
            latest[preference] = run_round(ctx, preference, round_no, parents, train_prompts, held_prompts)
            _write_outputs(ctx, out)
    _write_outputs(ctx, out)
    return ctx.lines


def _write_outputs(ctx: Context, out: Path) -> None:
    (out / "results.jsonl").write_text("".join(line.to_json() + "\n" for line in ctx.lines))
    (out / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in ctx.log))
    if ctx.lines:
        plot_win_rates(
            ctx.lines,
            out / "win_rates.png",
            title=f"Closed loop on {'a tiny random model' if ctx.options.tiny else 'SmolLM2-135M-Instruct'}: "
            "win-rate against the base by the hidden preference",
        )
