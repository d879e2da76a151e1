"""The closed loop on a tiny random model, end to end (``--tiny``): a fresh database, the app under
gunicorn with a Celery worker, simulated annotators over the REST API, an export, a DPO run through
the Celery task, a held-out generation job and the leaderboard. Asserts the direction: the labels
moved the model (DPO win-rate against the base > 0.6 under the annotators' hidden preference), and
the Bradley-Terry leaderboard built from simulated votes ranks the two versions the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_closed_loop_tiny_moves_the_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL")
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.closed_loop",
            "--tiny",
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=570,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout
    line = lines[0]
    for key in ("model", "preference", "method", "win_rate", "rm_accuracy", "empty_rate", "seconds"):
        assert key in line
    assert (line["model"], line["preference"], line["method"]) == ("tiny-random", "shorter", "dpo")
    assert line["win_rate"] > 0.6, line
    assert line["heldout_comparisons"] >= 48, line
    assert line["leaderboard_agrees"] is True, line
    assert line["bt_rating"] > line["bt_rating_base"], line
    assert line["empty_rate"] <= 0.1, line
    assert (out / "results.jsonl").read_text().strip() == json.dumps(line) or json.loads(
        (out / "results.jsonl").read_text()
    ) == line
    png = (out / "win_rates.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    steps = [json.loads(s) for s in (out / "steps.jsonl").read_text().splitlines()]
    annotated = [s for s in steps if s["step"] == "annotate"]
    assert annotated and all(s["errors"] == 0 and s["submitted"] > 0 for s in annotated)
