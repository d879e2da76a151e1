"""``manage.py closed_loop [--tiny] [--rounds 2] ...``: the closed-loop benchmark (see
benchmarks/closed_loop.py). It runs on its own fresh database and data folder, so it starts in a
child process with that environment rather than in this one."""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Simulated annotators label through the API, the labels train new versions, held-out win-rate is measured."

    def add_arguments(self, parser):
        parser.add_argument(
            "args", nargs="*", help="options of benchmarks/closed_loop.py (use -- before them)"
        )

    def run_from_argv(self, argv):
        # Pass every option through untouched (Django's parser would reject the loop's own).
        code = subprocess.call(
            [sys.executable, "-m", "training.closed_loop", *argv[2:]], cwd=settings.BASE_DIR
        )
        if code:
            raise SystemExit(code)

    def handle(self, *args, **options):
        code = subprocess.call([sys.executable, "-m", "training.closed_loop", *args], cwd=settings.BASE_DIR)
        if code:
            raise CommandError(f"the closed loop exited with status {code}")
