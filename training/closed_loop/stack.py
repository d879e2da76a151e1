"""A throw-away Arbiter for one closed-loop run: a fresh data folder and SQLite database, the web
app under gunicorn on a free 127.0.0.1 port, and a Celery worker on the ``gpu`` queue.

The orchestrating process must use the same environment (``stack_env``) *before* Django is set
up, so that it reads and writes the same database as the server and the worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env(data_dir: Path, *, threads: int = 2, settings: str = "config.settings.local") -> dict[str, str]:
    """Environment for every process of the stack: one data folder, one SQLite file, offline."""
    data_dir = Path(data_dir)
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings,
        "ARBITER_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'arbiter.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        # The migrate step runs the system checks; a worker running them before the URLconf is
        # loaded trips a circular import in feedback.api_support (reported), so workers skip them.
        "CELERY_SKIP_CHECKS": "1",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "ARBITER_TORCH_THREADS": str(threads),
    }


class Stack:
    """Start (and always stop) gunicorn and a gpu-queue Celery worker for ``data_dir``."""

    def __init__(
        self, data_dir: Path, env: dict[str, str], *, web_workers: int = 2, log_dir: Path | None = None
    ):
        self.data_dir = Path(data_dir)
        self.env = env
        self.web_workers = web_workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(log_dir or self.data_dir / "logs")
        self.children: list[subprocess.Popen] = []

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        proc.log_file = log  # type: ignore[attr-defined]
        self.children.append(proc)
        return proc

    def start(self) -> Stack:
        for folder in ("broker/queue", "broker/processed"):
            (self.data_dir / folder).mkdir(parents=True, exist_ok=True)
        py = sys.executable
        self._spawn(
            "worker-gpu",
            [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "gpu",
                "-c",
                "1",
                "-n",
                f"closedloop-gpu-{self.port}@%h",
                "--prefetch-multiplier",
                "1",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
        )
        self._spawn(
            "worker-default",
            [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "default",
                "-c",
                "1",
                "-n",
                f"closedloop-default-{self.port}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
        )
        self._spawn(
            "gunicorn",
            [
                py,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.web_workers),
                "--timeout",
                "120",
                "--access-logfile",
                "-",
            ],
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.url + "/accounts/login/", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the web server did not answer on {self.url} within {timeout:.0f}s")

    def check_alive(self) -> None:
        for proc in self.children:
            if proc.poll() is not None:
                name = Path(proc.log_file.name).stem  # type: ignore[attr-defined]
                tail = Path(proc.log_file.name).read_text(errors="replace")[-2000:]  # type: ignore[attr-defined]
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                # Cold stop for Celery: a warm shutdown would wait for a running job.
                proc.send_signal(signal.SIGQUIT if "celery" in proc.args else signal.SIGTERM)
        deadline = time.time() + 20
        for proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.log_file.close()  # type: ignore[attr-defined]
        self.children.clear()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
