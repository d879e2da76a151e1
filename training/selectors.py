"""Reads for the training pages and API: runs, their curves, schedules, and the method advisor."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet

from feedback.models import BinaryLabel, Demonstration, Membership, PreferencePair, Project, Role
from training.models import TrainingRun, TrainingSchedule

#: Curves drawn on a run's page: (title, [metrics.jsonl keys, first found per line]).
CURVES: list[tuple[str, list[str]]] = [
    ("loss", ["loss", "loss/policy_avg"]),
    ("reward / margin", ["rewards/margins", "margin", "objective/scores", "rewards/chosen"]),
    ("accuracy", ["rewards/accuracies", "accuracy", "mean_token_accuracy"]),
    ("KL", ["kl", "objective/kl"]),
]
#: Below these counts a method is offered but flagged as thin.
ENOUGH = {"pairs": 50, "thumbs": 50, "demos": 50, "documents": 5}


def runs_visible(*, user) -> QuerySet[TrainingRun]:
    runs = TrainingRun.objects.select_related("snapshot", "parent_version", "project", "reward_run").order_by(
        "-id"
    )
    if user is not None and not user.is_staff:
        admin_of = Membership.objects.filter(user=user, role=Role.ADMIN).values("project_id")
        runs = runs.filter(Q(project_id__in=admin_of) | Q(created_by=user))
    return runs


def projects_trainable(*, user) -> QuerySet[Project]:
    projects = Project.objects.order_by("name")
    if user is not None and not user.is_staff:
        projects = projects.filter(memberships__user=user, memberships__role=Role.ADMIN)
    return projects


def run_metrics_series(*, run: TrainingRun, max_points: int = 400) -> dict[str, list[tuple[int, float]]]:
    """``{curve title: [(step, value)]}`` from the run's metrics.jsonl (thinned to max_points)."""
    path = Path(run.output_dir) / "metrics.jsonl" if run.output_dir else None
    series: dict[str, list[tuple[int, float]]] = {title: [] for title, _ in CURVES}
    if path is None or not path.exists():
        return series
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "train_runtime" in row:  # the trainer's closing summary
            continue
        step = row.get("step")
        for title, keys in CURVES:
            for key in keys:
                value = row.get(key)
                if isinstance(value, int | float) and step is not None:
                    series[title].append((int(step), float(value)))
                    break
    for title, points in series.items():
        if len(points) > max_points:
            stride = len(points) / max_points
            series[title] = [points[int(i * stride)] for i in range(max_points)] + [points[-1]]
    return series


def run_lineage(*, run: TrainingRun) -> dict[str, Any]:
    """run → snapshot → produced version → its candidates (count)."""
    version = getattr(run, "model_version", None)
    candidates = version.candidates.count() if version is not None and hasattr(version, "candidates") else 0
    return {
        "snapshot": run.snapshot,
        "parent": run.parent_version,
        "version": version,
        "candidates": candidates,
    }


def schedules_for(*, project: Project | None = None) -> QuerySet[TrainingSchedule]:
    qs = TrainingSchedule.objects.select_related("project", "parent_version", "last_run").order_by("name")
    return qs.filter(project=project) if project is not None else qs


def documents_dir(project: Project) -> Path:
    """Where an admin's uploaded documents for continued pretraining live."""
    root = Path(getattr(settings, "DOCUMENTS_DIR", Path(settings.DATA_DIR) / "documents"))
    return root / project.slug


def count_documents(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    total = 0
    for p in folder.rglob("*"):
        if p.suffix.lower() in (".txt", ".md", ".markdown"):
            total += 1
        elif p.suffix.lower() == ".jsonl":
            total += sum(1 for line in p.open(encoding="utf-8", errors="replace") if line.strip())
    return total


@dataclass
class MethodAdvice:
    method: str
    supported: bool
    data: str
    count: int
    note: str = ""


@dataclass
class Advice:
    counts: dict[str, int]
    methods: list[MethodAdvice] = field(default_factory=list)
    pipelines: list[list[str]] = field(default_factory=list)
    summary: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "methods": [m.__dict__ for m in self.methods],
            "pipelines": self.pipelines,
            "summary": self.summary,
        }


def training_advice(*, project: Project) -> Advice:
    """Which methods the project's data supports (the seed article's decision flow), with counts,
    and how they chain: pairs → RM + PPO, DPO, ORPO; thumbs → KTO; demonstrations → SFT;
    documents → CPT; several kinds → pipelines such as CPT → SFT → DPO."""
    pairs = PreferencePair.objects.filter(prompt__project=project, is_tie=False)
    pair_stats = pairs.aggregate(n=Count("id"), prompts=Count("prompt", distinct=True))
    thumbs = BinaryLabel.objects.filter(candidate__prompt__project=project).aggregate(
        up=Count("id", filter=Q(label=True)), down=Count("id", filter=Q(label=False))
    )
    demos = Demonstration.objects.filter(prompt__project=project).count()
    docs = count_documents(documents_dir(project))
    counts = {
        "pairs": pair_stats["n"],
        "pair_prompts": pair_stats["prompts"],
        "thumbs_up": thumbs["up"],
        "thumbs_down": thumbs["down"],
        "demonstrations": demos,
        "documents": docs,
    }
    n_thumbs = thumbs["up"] + thumbs["down"]

    def note(n: int, kind: str) -> str:
        return "" if n >= ENOUGH[kind] else f"only {n}: expect a weak signal below ~{ENOUGH[kind]}"

    methods = [
        MethodAdvice("reward+ppo", pairs_ok := pair_stats["n"] > 0, "preference pairs", pair_stats["n"], note(pair_stats["n"], "pairs")),
        MethodAdvice("dpo", pairs_ok, "preference pairs", pair_stats["n"], note(pair_stats["n"], "pairs")),
        MethodAdvice("orpo", pairs_ok, "preference pairs", pair_stats["n"], note(pair_stats["n"], "pairs")),
        MethodAdvice(
            "kto",
            (n_thumbs > 0 and thumbs["up"] > 0 and thumbs["down"] > 0) or pairs_ok,
            "thumbs up/down (or pairs split)",
            n_thumbs or 2 * pair_stats["n"],
            "needs both up and down labels" if n_thumbs and not (thumbs["up"] and thumbs["down"]) else note(n_thumbs, "thumbs") if n_thumbs else "",
        ),
        MethodAdvice("sft", demos > 0, "demonstrations", demos, note(demos, "demos")),
        MethodAdvice("cpt", docs > 0, "documents", docs, note(docs, "documents") if docs else "upload .txt, .md or .jsonl documents on the training page"),
    ]  # fmt: skip
    prefix = (["cpt"] if docs else []) + (["sft"] if demos else [])
    pipelines: list[list[str]] = []
    if pairs_ok:
        pipelines.append([*prefix, "dpo"])
        pipelines.append([*prefix, "reward", "ppo"])
    elif n_thumbs:
        pipelines.append([*prefix, "kto"])
    elif prefix:
        pipelines.append(prefix)
    supported = [m.method for m in methods if m.supported]
    if not supported:
        summary = "No labels yet: collect pairs, thumbs or demonstrations (or upload documents)."
    elif pairs_ok:
        summary = (
            f"{pair_stats['n']} pairs: DPO is the simplest start; RM + PPO if you also want a reward model."
        )
    elif n_thumbs:
        summary = f"Thumbs only ({n_thumbs}): KTO."
    elif demos:
        summary = f"Demonstrations only ({demos}): SFT."
    else:
        summary = f"Documents only ({docs}): continued pretraining."
    return Advice(counts=counts, methods=methods, pipelines=pipelines, summary=summary)
