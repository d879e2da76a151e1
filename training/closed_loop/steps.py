"""The loop's steps, each through the app's own services or its REST API (Django-aware): accounts and
projects, generation jobs, simulated annotation over HTTP, snapshots, training runs through the Celery task,
the held-out items and the leaderboard. :mod:`training.closed_loop.loop` strings them together.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.recipes import modeling

from .annotator import Account, ApiClient, annotate_all
from .defaults import PROMPTS_FILE, LoopOptions, recipe_defaults
from .preferences import get_preference
from .report import ResultLine

logger = logging.getLogger("closed_loop")


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


def sample_pool(
    ctx: Context, name: str, parent: Any, prompts: list[dict], guidelines: str
) -> tuple[Any, Any]:
    """A ranking project of the prompts with ``candidates`` answers sampled from the parent for each
    (a generation job). Returns (project, job)."""
    o = ctx.options
    project = make_project(ctx, name, "ranking", o.candidates, prompts, guidelines)
    job = generate(ctx, project, [parent], n=o.candidates, greedy=False, pairing="samples")
    return project, job


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
