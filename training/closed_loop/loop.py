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

The parts: ``defaults.py`` (options, recipe settings; the runs behind them in ``RUNS.md``), ``steps.py``
(each step through the app's services or REST API), ``reward_check.py`` (the reward model's held-out
accuracy), ``annotator.py`` (the simulated annotators), ``preferences.py`` (hidden preferences, win rate),
``report.py`` (result lines, the plot); this module runs the rounds.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .annotator import ApiClient
from .defaults import LoopOptions
from .preferences import empty_rate, get_preference, win_rate
from .report import ResultLine, plot_win_rates
from .reward_check import preference_pairs, rm_accuracies, rm_check_pool, snapshot_test_groups
from .steps import (
    Context,
    annotate_project,
    copy_candidates,
    eval_items,
    export,
    generate,
    leaderboard_of,
    load_prompt_set,
    make_project,
    register_base,
    sample_pool,
    setup_accounts,
    train,
    version_of,
)


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
                extras[method]["_rm_test_prompts"] = snapshot_test_groups(pref_snap, rank_project)
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


# -- the whole loop ----------------------------------------------------------------------------
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
