"""Run everything on one machine: migrations, demo data, web server, Celery worker and beat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from config.queues import Queue


class Command(BaseCommand):
    help = "Migrate, seed the demo, and start gunicorn, a Celery worker per queue and beat."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("ARBITER_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("ARBITER_PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--no-demo", action="store_true", help="Skip demo data.")
        parser.add_argument("--no-model", action="store_true", help="Demo data without the model.")

    def _recover_jobs(self) -> None:
        """On one box, a job still marked running when `up` starts was left by a worker that died with the
        last `up`: queue it again (it resumes: generation skips finished prompts, training restarts from
        its last checkpoint). Runs before the workers start, so nothing live is taken over."""
        from inference.models import GenerationJob, JobStatus
        from inference.services import generation_job_resume
        from training.services import training_runs_recover

        jobs = list(GenerationJob.objects.filter(status=JobStatus.RUNNING).values_list("id", flat=True))
        for job_id in jobs:
            generation_job_resume(job_id=job_id, force=True)
        runs = training_runs_recover()
        if jobs or runs:
            self.stdout.write(
                f"Resuming {len(jobs)} generation job(s) and {len(runs)} training run(s) left running."
            )

    def handle(self, *args, host: str, port: int, web_workers: int, no_demo: bool, no_model: bool, **o):
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database ready.")
        self._recover_jobs()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        py = sys.executable
        children: list[subprocess.Popen] = []

        def spawn(cmd: list[str]) -> None:
            children.append(subprocess.Popen(cmd, env=env))

        # Workers first, so the demo generation jobs are picked up as soon as they are queued.
        spawn(
            [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                Queue.GPU.value,
                "-c",
                "1",
                "-n",
                "gpu@%h",
                "--loglevel",
                "INFO",
                "--prefetch-multiplier",
                "1",
            ]
        )
        spawn(
            [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                Queue.DEFAULT.value,
                "-c",
                "2",
                "-n",
                "default@%h",
                "--loglevel",
                "INFO",
            ]
        )
        spawn([py, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"])
        spawn(
            [
                py,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"{host}:{port}",
                "--workers",
                str(web_workers),
                "--access-logfile",
                "-",
            ]
        )
        logins = []
        if not no_demo:
            from feedback.demo.seed import demo_seed

            model_path = None
            if not no_model:
                from inference.engines.demo_model import ensure_demo_model

                self.stdout.write("Preparing the demo model (converted once from GGUF, then cached)…")
                model_path = str(ensure_demo_model(settings.MODELS_DIR))
            logins = demo_seed(model_path=model_path)
        url = f"http://{host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"\nArbiter is running at {url}"))
        for login in logins:
            self.stdout.write(f"  {login.role:<10} {login.username} / {login.password}")
        if logins and not no_model:
            self.stdout.write("Candidates are being generated in the background; progress on the home page.")
        self.stdout.write("Press Ctrl-C to stop.\n")

        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                if any(c.poll() is not None for c in children):
                    self.stderr.write("A child process exited; stopping.")
                    break
                time.sleep(0.5)
        finally:
            for c in children:
                if c.poll() is None:
                    # Celery's warm shutdown would wait for a long generation to finish: stop cold.
                    # The job is left for the next worker to resume (acks_late re-delivers it).
                    c.send_signal(signal.SIGQUIT if "celery" in c.args else signal.SIGTERM)
            deadline = time.time() + 15
            for c in children:
                try:
                    c.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    c.kill()
