"""Active selection: a succeeded reward run scores its project's open, unannotated items (in a
child process) so the ones it tells apart least are assigned first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import transaction

from feedback.models import Item
from inference.models import JobStatus
from training.models import Method, TrainingRun
from training.services.common import TrainingRunError, _setting
from training.services.execution import _child_env, _die_with_parent


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
