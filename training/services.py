"""Writes for training runs, RM + PPO pipelines, schedules and active selection.

A run lives ``queued → running → succeeded | failed | cancelled`` on its row. The Celery task
(``training.tasks.training_run_run``, gpu queue) claims it with one conditional UPDATE and calls
``training_run_execute``, which starts the Django-free recipe
(``python -m training.recipes.<method> --config run-config.yaml``) as a child process and, every
``TRAINING_POLL_S`` seconds, copies its ``progress.json`` and the tail of its output into the row
and looks at the cancel flag and the clock. So:

- cancel: the child's process group is killed within a poll; the run ends ``cancelled``;
- timeout (``timeout_s`` or ``TRAINING_RUN_TIMEOUT_S``): killed, ``failed``;
- crash or kill: ``failed`` with the output's tail; the checkpoints stay, and
  ``training_run_requeue`` queues it again — the recipe resumes from its last checkpoint;
- a worker that dies leaves the row ``running`` with a stale heartbeat: the broker redelivers the
  task (acks_late) and the claim accepts a stale run, or ``training_runs_recover`` re-queues it.
  The child dies with its parent (PR_SET_PDEATHSIG), so two processes never train one folder;
- success: the recipe renames its ``final/`` folder into place only when complete; the run is
  marked ``succeeded`` and (for policy methods) a new ModelVersion with parent + training_run
  lineage is registered in the same transaction. Reward runs register no version: their model
  is recorded on the run, starts the PPO runs waiting on it, and scores open items for active
  selection.
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from feedback.models import BinaryLabel, DatasetSnapshot, Demonstration, Item, PreferencePair, Project
from inference.models import Engine, JobStatus, ModelVersion
from training.models import Method, TrainingRun, TrainingSchedule, Trigger

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 60
#: The snapshot kind each method reads when the app exports for it.
SNAPSHOT_KIND = {
    Method.REWARD: "preference",
    Method.PPO: "preference",
    Method.DPO: "preference",
    Method.ORPO: "preference",
    Method.KTO: "unpaired",
    Method.SFT: "sft",
}
#: Methods with a frozen reference policy: the lineage's original base is their default reference.
REFERENCE_METHODS = (Method.DPO, Method.KTO, Method.PPO)
PollCallback = Callable[[TrainingRun, "subprocess.Popen[str]"], None]


class TrainingRunError(ValueError):
    """A run or schedule cannot be created or changed as asked."""


# -- helpers ----------------------------------------------------------------------------------
def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def runs_dir() -> Path:
    return Path(_setting("RUNS_DIR", Path(settings.DATA_DIR) / "runs"))


def version_weights(version: ModelVersion) -> str:
    """The local folder a recipe starts from: the adapter folder if any, else the base weights."""
    path = version.adapter_path or version.base_model
    if not path or not Path(path).is_dir():
        raise TrainingRunError(
            f"model version {version.name} has no local weights folder ({path or 'none'}); "
            "recipes load local folders only"
        )
    return path


def lineage_root(version: ModelVersion) -> ModelVersion:
    seen = {version.pk}
    while version.parent_id is not None and version.parent_id not in seen:
        version = version.parent  # type: ignore[assignment]
        seen.add(version.pk)
    return version


def _recipe(method: str):
    from training.recipes import recipe

    return recipe(method)


def _validate_config(method: str, config: dict[str, Any]) -> dict[str, Any]:
    from training.recipes.config import ConfigError

    try:
        cfg = _recipe(method).Config.from_dict(config)
    except ConfigError as exc:
        raise TrainingRunError(str(exc)) from None
    data = cfg.to_dict()
    data.pop("method", None)
    return data


def _enqueue(run_id: int) -> None:
    from training.tasks import training_run_run

    transaction.on_commit(lambda: training_run_run.delay(run_id))


# -- create ------------------------------------------------------------------------------------
@transaction.atomic
def training_run_create(
    *,
    method: Method | str,
    parent_version: ModelVersion,
    snapshot: DatasetSnapshot | None = None,
    documents_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    project: Project | None = None,
    reward_run: TrainingRun | None = None,
    schedule: TrainingSchedule | None = None,
    created_by=None,
    timeout_s: int = 0,
    enqueue: bool = True,
) -> TrainingRun:
    """A queued run whose recipe config is validated now (so a bad field fails here, not on the GPU).

    ``config`` holds recipe fields; the app fills in the paths: the start model (the parent
    version's weights), the snapshot folder (or ``documents_dir`` for cpt), the run folder, the
    reference (the lineage's original base, unless the config names one) and, for PPO, the reward
    model of ``reward_run``.
    """
    method = Method(method)
    config = dict(config or {})
    for key in ("model_name_or_path", "snapshot_dir", "output_dir"):
        if key in config:
            raise TrainingRunError(f"{key} is set by the app; leave it out of the config")
    if method == Method.CPT:
        if documents_dir is None or not Path(documents_dir).exists():
            raise TrainingRunError(
                "continued pretraining needs documents_dir: a folder of .txt/.md/.jsonl documents"
            )
        data_dir = str(Path(documents_dir).resolve())
        if snapshot is not None:
            raise TrainingRunError("continued pretraining reads documents, not a label snapshot")
    else:
        if snapshot is None:
            raise TrainingRunError(f"{method.label} needs a written snapshot")
        if (
            snapshot.status != "written"
            or not snapshot.path
            or not Path(snapshot.path, "manifest.json").exists()
        ):
            raise TrainingRunError(f"snapshot {snapshot.pk} is not written yet (status {snapshot.status})")
        kinds = _recipe(method).Config.SNAPSHOT_KINDS
        if snapshot.kind not in kinds:
            raise TrainingRunError(f"{method.label} reads {list(kinds)} snapshots, not {snapshot.kind!r}")
        data_dir = snapshot.path
        if project is None:
            project = snapshot.projects.order_by("id").first()
    start = version_weights(parent_version)
    if method == Method.PPO:
        if reward_run is None and not config.get("reward_model_path"):
            raise TrainingRunError("PPO needs a reward run (or reward_model_path in its config)")
        if reward_run is not None:
            if reward_run.method != Method.REWARD:
                raise TrainingRunError(f"run {reward_run.pk} is a {reward_run.method} run, not a reward run")
            if reward_run.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise TrainingRunError(f"reward run {reward_run.pk} is {reward_run.status}")
            config["reward_model_path"] = str(Path(reward_run.output_dir) / "final")
    elif reward_run is not None:
        raise TrainingRunError("only PPO runs depend on a reward run")
    if method in REFERENCE_METHODS and not config.get("ref_model_name_or_path"):
        root = lineage_root(parent_version)
        if root.pk != parent_version.pk:
            config["ref_model_name_or_path"] = version_weights(root)  # keep the original base as reference
    # Validate with a placeholder run folder, then store the resolved config with the real one.
    full = {
        **config,
        "model_name_or_path": start,
        "snapshot_dir": data_dir,
        "output_dir": str(runs_dir() / "pending"),
    }
    resolved = _validate_config(method, full)
    run = TrainingRun.objects.create(
        method=method,
        config=resolved,
        snapshot=snapshot,
        parent_version=parent_version,
        project=project,
        reward_run=reward_run,
        schedule=schedule,
        created_by=created_by
        if created_by is not None and getattr(created_by, "is_authenticated", False)
        else None,
        timeout_s=timeout_s,
    )
    run.output_dir = str(runs_dir() / f"run-{run.pk}")
    run.config = {**resolved, "output_dir": run.output_dir}
    run.save(update_fields=["output_dir", "config"])
    if enqueue and (reward_run is None or reward_run.status == JobStatus.SUCCEEDED):
        _enqueue(run.pk)
    return run


@transaction.atomic
def training_pipeline_create_rm_ppo(
    *,
    snapshot: DatasetSnapshot,
    parent_version: ModelVersion,
    reward_config: dict[str, Any] | None = None,
    ppo_config: dict[str, Any] | None = None,
    ppo_snapshot: DatasetSnapshot | None = None,
    project: Project | None = None,
    schedule: TrainingSchedule | None = None,
    created_by=None,
    enqueue: bool = True,
) -> tuple[TrainingRun, TrainingRun]:
    """RM + PPO as one pipeline: a reward run, and a PPO run that starts when it succeeds."""
    common = {
        "parent_version": parent_version,
        "project": project,
        "schedule": schedule,
        "created_by": created_by,
    }
    rm = training_run_create(
        method=Method.REWARD, snapshot=snapshot, config=reward_config, enqueue=enqueue, **common
    )
    ppo = training_run_create(
        method=Method.PPO,
        snapshot=ppo_snapshot or snapshot,
        config=ppo_config,
        reward_run=rm,
        enqueue=False,  # started by the reward run's success
        **common,
    )
    return rm, ppo


# -- claim, cancel, requeue, recover ----------------------------------------------------------
def _stale_before(now: datetime) -> datetime:
    return now - timedelta(seconds=float(_setting("TRAINING_STALE_S", 300)))


def training_run_claim(*, run_id: int) -> bool:
    """Move a queued run (or one left running by a dead worker) to running, atomically.

    A PPO run waits for its reward run: it is not claimed before that run succeeded.
    """
    now = timezone.now()
    waiting = TrainingRun.objects.filter(id=run_id, reward_run__isnull=False).exclude(
        reward_run__status=JobStatus.SUCCEEDED
    )
    if waiting.exists():
        return False
    claimable = Q(status=JobStatus.QUEUED) | Q(status=JobStatus.RUNNING, heartbeat_at__lt=_stale_before(now))
    return bool(
        TrainingRun.objects.filter(claimable, id=run_id, cancel_requested=False).update(
            status=JobStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            error="",
            attempts=F("attempts") + 1,
        )
    )


@transaction.atomic
def training_run_cancel(*, run_id: int) -> TrainingRun:
    """A queued run is cancelled at once (and the PPO runs waiting on it fail); a running one
    stops within a poll."""
    now = timezone.now()
    if TrainingRun.objects.filter(id=run_id, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now
    ):
        _fail_dependents(run_id, f"reward run {run_id} was cancelled")
    TrainingRun.objects.filter(id=run_id, status=JobStatus.RUNNING).update(cancel_requested=True)
    return TrainingRun.objects.get(id=run_id)


@transaction.atomic
def training_run_requeue(*, run_id: int, force: bool = False, enqueue: bool = True) -> TrainingRun:
    """Queue a failed or cancelled run again: the recipe resumes from its last checkpoint.

    ``force`` also takes back a run left ``running`` (a worker that died)."""
    allowed = [JobStatus.FAILED, JobStatus.CANCELLED] + ([JobStatus.RUNNING] if force else [])
    updated = TrainingRun.objects.filter(id=run_id, status__in=allowed).update(
        status=JobStatus.QUEUED, cancel_requested=False, error="", finished_at=None
    )
    run = TrainingRun.objects.get(id=run_id)
    if not updated:
        raise TrainingRunError(
            f"run {run_id} is {run.status}: only failed or cancelled runs are queued again"
        )
    # PPO runs that failed because this reward run failed wait for it again.
    TrainingRun.objects.filter(reward_run_id=run_id, status=JobStatus.FAILED).update(
        status=JobStatus.QUEUED, error="", finished_at=None
    )
    if enqueue:
        _enqueue(run.pk)
    return run


def training_runs_recover(*, now: datetime | None = None, enqueue: bool = True) -> list[int]:
    """Re-queue runs whose worker died (running, heartbeat older than TRAINING_STALE_S)."""
    now = now or timezone.now()
    ids = list(
        TrainingRun.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=_stale_before(now)).values_list(
            "id", flat=True
        )
    )
    requeued = []
    for run_id in ids:
        if TrainingRun.objects.filter(
            id=run_id, status=JobStatus.RUNNING, heartbeat_at__lt=_stale_before(now)
        ).update(status=JobStatus.QUEUED):
            requeued.append(run_id)
            if enqueue:
                with transaction.atomic():
                    _enqueue(run_id)
    return requeued


def _fail_dependents(run_id: int, why: str) -> None:
    TrainingRun.objects.filter(reward_run_id=run_id, status=JobStatus.QUEUED).update(
        status=JobStatus.FAILED, error=why, finished_at=timezone.now()
    )


# -- execute ------------------------------------------------------------------------------------
def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()  # own process group: a kill takes the recipe's children too
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die when the worker dies
    except OSError:
        pass


class _Child:
    def __init__(self, cmd: list[str], cwd: str, env: dict[str, str], log_path: Path):
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._log = log_path.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            cwd=cwd,
            env=env,
            preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._log.write(line)
            self._log.flush()
            for part in line.rstrip("\n").split("\r"):
                if part.strip():
                    self.lines.append(part[:500])

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
        self.process.wait()
        self.close()

    def close(self) -> None:
        self._reader.join(timeout=5)
        self._log.close()

    def tail(self, n: int = LOG_TAIL_LINES) -> str:
        return "\n".join(list(self.lines)[-n:])


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def recipe_command(method: str, config_path: Path) -> list[str]:
    """``TRAINING_LAUNCHER`` (e.g. ``["accelerate", "launch", "--config_file", "..."]``) + the recipe."""
    launcher = list(_setting("TRAINING_LAUNCHER", []) or [])
    if launcher:
        return [*launcher, "-m", f"training.recipes.{method}", "--config", str(config_path)]
    return [sys.executable, "-m", f"training.recipes.{method}", "--config", str(config_path)]


def _child_env() -> dict[str, str]:
    root = str(Path(settings.BASE_DIR))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["TQDM_DISABLE"] = "1"  # progress goes through progress.json, not bars in the log
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    threads = _setting("TRAINING_TORCH_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _finish(run_id: int, status: str, **fields: Any) -> None:
    TrainingRun.objects.filter(id=run_id, status=JobStatus.RUNNING).update(
        status=status, finished_at=timezone.now(), heartbeat_at=timezone.now(), **fields
    )


def training_run_execute(*, run_id: int, on_poll: PollCallback | None = None) -> TrainingRun:
    """Run a claimed (running) run to its end in a child process; see the module docstring."""
    run = TrainingRun.objects.select_related("reward_run", "parent_version").get(id=run_id)
    if run.status != JobStatus.RUNNING:
        raise TrainingRunError(f"run {run_id} is {run.status}, not running: claim it first")
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(run.config)
    if run.reward_run is not None:
        config["reward_model_path"] = str(Path(run.reward_run.output_dir) / "final")
    config_path = out / "run-config.yaml"
    config_path.write_text(
        f"# {' '.join(recipe_command(run.method, config_path))}\n"
        + yaml.safe_dump({"method": run.method, **config}, sort_keys=False)
    )
    (out / "result.json").unlink(missing_ok=True)
    poll_s = float(_setting("TRAINING_POLL_S", 2.0))
    timeout = float(run.timeout_s or _setting("TRAINING_RUN_TIMEOUT_S", 48 * 3600))
    deadline = time.monotonic() + timeout
    child = _Child(
        recipe_command(run.method, config_path), str(settings.BASE_DIR), _child_env(), out / "train.log"
    )
    outcome, error = "", ""
    try:
        while True:
            try:
                child.process.wait(timeout=poll_s)
            except subprocess.TimeoutExpired:
                pass
            progress = _read_json(out / "progress.json") or {}
            fields: dict[str, Any] = {"heartbeat_at": timezone.now(), "log_tail": child.tail()}
            if progress.get("step") is not None:
                fields["progress_step"] = int(progress["step"])
            if progress.get("total_steps"):
                fields["progress_total"] = int(progress["total_steps"])
            TrainingRun.objects.filter(id=run_id).update(**fields)
            if child.process.poll() is not None:
                break
            if on_poll is not None:
                on_poll(run, child.process)
            if TrainingRun.objects.filter(id=run_id, cancel_requested=True).exists():
                outcome = JobStatus.CANCELLED
                break
            if time.monotonic() > deadline:
                outcome, error = (
                    JobStatus.FAILED,
                    f"the run passed its time limit ({timeout:.0f} s) and was stopped",
                )
                break
    except BaseException:
        child.kill()
        raise
    if outcome:
        child.kill()
        _finish(run_id, outcome, error=error, log_tail=child.tail())
        if outcome == JobStatus.FAILED:
            _fail_dependents(run_id, f"reward run {run_id} failed")
        else:
            _fail_dependents(run_id, f"reward run {run_id} was cancelled")
        return TrainingRun.objects.get(id=run_id)
    code = child.process.wait()
    child.close()
    result = _read_json(out / "result.json")
    final = out / "final"
    if (
        code != 0
        or result is None
        or result.get("status") != "succeeded"
        or not (final / "arbiter.json").exists()
    ):
        reason = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        errors = [line for line in child.lines if line.startswith(("error:", "Traceback")) or "Error" in line]
        detail = errors[-1] if errors else ""
        _finish(
            run_id,
            JobStatus.FAILED,
            error=f"the recipe {reason}"
            + (f": {detail}" if detail else "")
            + ("; its checkpoints are kept: queue it again to resume" if latest_checkpoint_step(out) else ""),
            log_tail=child.tail(),
        )
        _fail_dependents(run_id, f"reward run {run_id} failed")
        return TrainingRun.objects.get(id=run_id)
    return _succeed(run, result, child.tail())


def latest_checkpoint_step(out: Path) -> int:
    from training.recipes.runtime import latest_checkpoint

    ckpt = latest_checkpoint(out / "checkpoints")
    return int(ckpt.name.split("-")[1]) if ckpt else 0


def _version_name(run: TrainingRun) -> str:
    parent = run.parent_version.name if run.parent_version else "model"
    suffix = f"+{run.method}-run{run.pk}"
    return parent[: 200 - len(suffix)] + suffix


def _succeed(run: TrainingRun, result: dict[str, Any], tail: str) -> TrainingRun:
    from inference.services import model_version_register

    metrics = {
        "eval": result.get("eval", {}),
        "final_dir": result["final_dir"],
        "steps": result.get("steps"),
        "seconds": result.get("seconds"),
        "save_mode": result.get("save_mode"),
        "resumed_from_step": result.get("resumed_from_step", 0),
        "snapshot": result.get("snapshot"),
    }
    for key in ("documents", "blocks", "rows", "desirable_weight", "reward_model"):
        if key in result:
            metrics[key] = result[key]
    with transaction.atomic():
        updated = TrainingRun.objects.filter(id=run.pk, status=JobStatus.RUNNING).update(
            status=JobStatus.SUCCEEDED,
            finished_at=timezone.now(),
            heartbeat_at=timezone.now(),
            metrics=metrics,
            log_tail=tail,
            progress_step=result.get("steps") or 0,
        )
        if updated and run.method not in (Method.REWARD,):
            parent = run.parent_version
            adapter = result.get("save_mode") == "adapter"
            # vLLM in process loads any weights; a running OpenAI-compatible server (vllm serve)
            # takes a new LoRA adapter over the base it serves, loaded live on register.
            served_base = parent and parent.engine == Engine.OPENAI and adapter and not parent.adapter_path
            engine = (
                parent.engine
                if parent and (parent.engine == Engine.VLLM or served_base)
                else Engine.TRANSFORMERS
            )
            model_version_register(
                name=_version_name(run),
                base_model=run.config["model_name_or_path"] if adapter else result["final_dir"],
                adapter_path=result["final_dir"] if adapter else "",
                engine=engine,
                engine_settings=dict(parent.engine_settings) if parent and engine == parent.engine else {},
                parent=parent,
                training_run=run,
            )
    if updated and run.method == Method.REWARD:
        for dependent in TrainingRun.objects.filter(reward_run=run, status=JobStatus.QUEUED).values_list(
            "id", flat=True
        ):
            with transaction.atomic():
                _enqueue(dependent)
        if run.project_id and _setting("TRAINING_ACTIVE_SELECTION", True):
            from training.tasks import training_active_selection

            transaction.on_commit(lambda: training_active_selection.delay(run.pk))
    return TrainingRun.objects.get(id=run.pk)


# -- active selection ---------------------------------------------------------------------------
def items_prioritise_by_reward(*, run_id: int, project_id: int | None = None, limit: int = 5000) -> int:
    """Score the open, unannotated items of the run's project with its reward model and write
    ``Item.priority = 1 / (1 + smallest reward gap)``: the items whose candidates the reward model
    can tell apart least come first in the "priority" assignment order. Returns items scored."""
    run = TrainingRun.objects.get(id=run_id)
    if run.method != Method.REWARD or run.status != JobStatus.SUCCEEDED:
        raise TrainingRunError(f"run {run_id} is not a succeeded reward run")
    project_id = project_id or run.project_id
    if project_id is None:
        raise TrainingRunError(f"run {run_id} has no project to score")
    items = list(
        Item.objects.filter(project_id=project_id, is_open=True, is_gold=False, annotations_count=0)
        .select_related("prompt")
        .prefetch_related("slots__candidate")
        .order_by("id")[:limit]
    )
    rows = []
    for item in items:
        texts = [slot.candidate.text for slot in sorted(item.slots.all(), key=lambda s: s.position)]
        if len(texts) >= 2:
            rows.append({"item_id": item.pk, "prompt": item.prompt.messages, "candidates": texts})
    if not rows:
        return 0
    work = Path(run.output_dir) / "active"
    work.mkdir(parents=True, exist_ok=True)
    (work / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = work / "scores.jsonl"
    out.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "training.recipes.active",
        "--model", run.metrics["final_dir"], "--input", str(work / "items.jsonl"), "--output", str(out),
        "--max-length", str(run.config.get("max_length", 1024)),
    ]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=str(settings.BASE_DIR), env=_child_env(), capture_output=True, text=True,
        timeout=float(_setting("TRAINING_RUN_TIMEOUT_S", 48 * 3600)), preexec_fn=_die_with_parent,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"active selection scoring failed: {done.stderr[-2000:]}")
    scores = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        scores[int(row["item_id"])] = float(row["priority"])
    with transaction.atomic():
        objs = list(Item.objects.filter(id__in=list(scores)))
        for obj in objs:
            obj.priority = scores[obj.pk]
        Item.objects.bulk_update(objs, ["priority"], batch_size=500)
    return len(objs)


# -- schedules ----------------------------------------------------------------------------------
def new_labels_since(
    *, project: Project, method: str, after_annotation_id: int, export_filters: dict[str, Any] | None = None
) -> int:
    """Labels of the kind ``method`` trains on, made after the given annotation id, counted under
    the export's annotation filters (the schedule's ``export_filters``: by default flagged
    annotators and gold items left out), so the threshold counts what the snapshot will hold."""
    from feedback.exports.services import freeze_filters
    from feedback.exports.spec import ExportSpec

    kind = SNAPSHOT_KIND.get(Method(method))
    if kind == "preference":
        qs = PreferencePair.objects.filter(is_tie=False)
    elif kind == "unpaired":
        qs = BinaryLabel.objects.all()
    elif kind == "sft":
        qs = Demonstration.objects.all()
    else:
        raise TrainingRunError(f"{method} runs on documents: it cannot be scheduled on new labels")
    spec = ExportSpec.from_dict({**(export_filters or {}), "kind": kind, "project_ids": [project.pk]})
    q = spec.annotation_q(freeze_filters(spec), prefix="annotation__")
    return qs.filter(q, annotation_id__gt=after_annotation_id).count()


def _schedule_cutoff(schedule: TrainingSchedule) -> int:
    last = schedule.last_run
    if last is not None and last.snapshot is not None:
        return int(last.snapshot.frozen.get("annotation_id_max") or 0)
    return 0


def training_schedule_check(*, schedule: TrainingSchedule) -> None:
    """Raise TrainingRunError if the schedule cannot work (method, hour, recipe config)."""
    if schedule.method == Method.CPT:
        raise TrainingRunError("continued pretraining reads documents: start it by hand")
    if schedule.trigger == Trigger.NIGHTLY and not 0 <= schedule.hour <= 23:
        raise TrainingRunError("hour must be 0-23")
    cfg = dict(schedule.config or {})
    if schedule.method == Method.PPO:
        reward_cfg = cfg.get("reward") or {}
        _validate_config(
            Method.REWARD, {**reward_cfg, "model_name_or_path": "m", "snapshot_dir": "s", "output_dir": "o"}
        )
        cfg = dict(cfg.get("ppo", {k: v for k, v in cfg.items() if k != "reward"}))
        cfg.setdefault("reward_model_path", "pending")
    _validate_config(
        schedule.method, {**cfg, "model_name_or_path": "m", "snapshot_dir": "s", "output_dir": "o"}
    )


@transaction.atomic
def training_schedule_save(*, schedule: TrainingSchedule) -> TrainingSchedule:
    """Save a schedule and keep its django-celery-beat PeriodicTask in step (crontab or interval)."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    training_schedule_check(schedule=schedule)
    schedule.save()
    if schedule.trigger == Trigger.NIGHTLY:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute="0", hour=str(schedule.hour), day_of_week="*", day_of_month="*", month_of_year="*",
            timezone=settings.TIME_ZONE,
        )  # fmt: skip
        when = {"crontab": crontab, "interval": None}
    else:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.check_every_minutes, period=IntervalSchedule.MINUTES
        )
        when = {"interval": interval, "crontab": None}
    fields = {
        "name": f"training schedule {schedule.pk}: {schedule.name}"[:200],
        "task": "training.tasks.training_schedule_fire",
        "args": json.dumps([schedule.pk]),
        "enabled": schedule.enabled,
        "queue": "default",
        **when,
    }
    task = schedule.periodic_task
    if task is None:
        task = PeriodicTask.objects.create(**fields)
        schedule.periodic_task = task
        TrainingSchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
    else:
        for key, value in fields.items():
            setattr(task, key, value)
        task.save()
    return schedule


@transaction.atomic
def training_schedule_delete(*, schedule: TrainingSchedule) -> None:
    """Delete a schedule and its django-celery-beat PeriodicTask (beat would fire it forever)."""
    task_id = schedule.periodic_task_id
    schedule.delete()
    if task_id is not None:
        from django_celery_beat.models import PeriodicTask

        PeriodicTask.objects.filter(pk=task_id).delete()


def _schedule_start_version(schedule: TrainingSchedule) -> ModelVersion:
    if schedule.follow_latest:
        latest = (
            ModelVersion.objects.filter(
                training_run__schedule=schedule, training_run__status=JobStatus.SUCCEEDED
            )
            .order_by("-created_at", "-id")
            .first()
        )
        if latest is not None:
            return latest
    return schedule.parent_version


def training_schedule_fire(*, schedule_id: int, now: datetime | None = None) -> TrainingRun | None:
    """One firing: enough new labels → export a snapshot and start the run (or RM → PPO); else
    record why and start nothing."""
    from feedback.exports.services import snapshot_create, snapshot_write

    now = now or timezone.now()
    schedule = (
        TrainingSchedule.objects.select_related("project", "last_run__snapshot")
        .filter(id=schedule_id)
        .first()
    )
    if schedule is None:  # deleted after beat read its entry
        logger.warning("training schedule %s no longer exists: nothing started", schedule_id)
        return None
    if not schedule.enabled:
        decision = "disabled: nothing started"
        TrainingSchedule.objects.filter(pk=schedule.pk).update(last_checked_at=now, last_decision=decision)
        return None
    busy = TrainingRun.objects.filter(schedule=schedule, status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
    if busy.exists():
        decision = f"run {busy.first().pk} of this schedule is still {busy.first().status}: nothing started"
        TrainingSchedule.objects.filter(pk=schedule.pk).update(last_checked_at=now, last_decision=decision)
        return None
    cutoff = _schedule_cutoff(schedule)
    fresh = new_labels_since(
        project=schedule.project,
        method=schedule.method,
        after_annotation_id=cutoff,
        export_filters=schedule.export_filters,
    )
    unit = {"preference": "pairs", "unpaired": "thumbs labels", "sft": "demonstrations"}[
        SNAPSHOT_KIND[Method(schedule.method)]
    ]
    if fresh < schedule.min_new_labels:
        decision = (
            f"{fresh} new {unit} since "
            + (f"run {schedule.last_run_id}" if schedule.last_run_id else "the start")
            + f", below the threshold of {schedule.min_new_labels}: nothing started"
        )
        TrainingSchedule.objects.filter(pk=schedule.pk).update(last_checked_at=now, last_decision=decision)
        return None
    kind = SNAPSHOT_KIND[Method(schedule.method)]
    snapshot = snapshot_create(
        name=f"{schedule.name} {now:%Y-%m-%d %H:%M}",
        spec={**(schedule.export_filters or {}), "kind": kind, "project_ids": [schedule.project_id]},
    )
    snapshot_write(snapshot=snapshot, formats=("jsonl",))
    start = _schedule_start_version(schedule)
    cfg = dict(schedule.config or {})
    with transaction.atomic():
        if schedule.method == Method.PPO:
            rm, run = training_pipeline_create_rm_ppo(
                snapshot=snapshot, parent_version=start, reward_config=cfg.get("reward"),
                ppo_config=cfg.get("ppo", {k: v for k, v in cfg.items() if k != "reward"}),
                project=schedule.project, schedule=schedule,
            )  # fmt: skip
            started = f"reward run {rm.pk} then PPO run {run.pk}"
        else:
            run = training_run_create(
                method=schedule.method, snapshot=snapshot, parent_version=start, config=cfg,
                project=schedule.project, schedule=schedule,
            )  # fmt: skip
            started = f"{schedule.method} run {run.pk}"
        decision = (
            f"{fresh} new {unit} (threshold {schedule.min_new_labels}): snapshot {snapshot.pk}, {started}"
        )
        TrainingSchedule.objects.filter(pk=schedule.pk).update(
            last_checked_at=now, last_decision=decision, last_run=run
        )
    return run
