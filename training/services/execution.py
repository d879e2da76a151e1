"""Executing a claimed run: the recipe as a child process (``python -m training.recipes.<method>``)
that dies with the worker, polled for progress, output tail, cancel and timeout, then marked failed
or handed to registration. The run's lifecycle is described in the package docstring."""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.utils import timezone

from inference.models import JobStatus
from training.models import TrainingRun
from training.services.common import TrainingRunError, _setting
from training.services.registration import _succeed
from training.services.runs import _fail_dependents

LOG_TAIL_LINES = 60

PollCallback = Callable[[TrainingRun, "subprocess.Popen[str]"], None]


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
