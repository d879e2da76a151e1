"""``manage.py training_run --method dpo --snapshot 3 --version 1 [--config run.yaml] [--now]``

Queues a run (the GPU worker picks it up), or with ``--now`` claims and runs it in this process,
printing progress; ``--pipeline`` with ``--method ppo`` trains its reward model first.
"""

from __future__ import annotations

import yaml
from django.core.management.base import BaseCommand, CommandError

from feedback.models import DatasetSnapshot, Project
from inference.models import ModelVersion
from training import services
from training.models import Method


class Command(BaseCommand):
    help = "Queue (or run now) a training run from a snapshot and a model version."

    def add_arguments(self, parser):
        parser.add_argument("--method", required=True, choices=Method.values)
        parser.add_argument("--version", type=int, required=True, help="parent ModelVersion id")
        parser.add_argument("--snapshot", type=int, help="written DatasetSnapshot id (not for cpt)")
        parser.add_argument("--documents", help="cpt: folder of documents")
        parser.add_argument("--project", type=int)
        parser.add_argument("--config", help="YAML file of recipe fields")
        parser.add_argument("--pipeline", action="store_true", help="ppo: train the reward model first")
        parser.add_argument("--now", action="store_true", help="run here instead of queueing")

    def handle(self, *args, **opts):
        config = {}
        if opts["config"]:
            with open(opts["config"], encoding="utf-8") as fh:
                config = yaml.safe_load(fh) or {}
        try:
            version = ModelVersion.objects.get(pk=opts["version"])
            snapshot = DatasetSnapshot.objects.get(pk=opts["snapshot"]) if opts["snapshot"] else None
            project = Project.objects.get(pk=opts["project"]) if opts["project"] else None
        except (ModelVersion.DoesNotExist, DatasetSnapshot.DoesNotExist, Project.DoesNotExist) as exc:
            raise CommandError(str(exc)) from None
        try:
            if opts["method"] == Method.PPO and opts["pipeline"]:
                runs = list(
                    services.training_pipeline_create_rm_ppo(
                        snapshot=snapshot, parent_version=version, reward_config=config.get("reward"),
                        ppo_config=config.get("ppo", config), project=project, enqueue=not opts["now"],
                    )
                )  # fmt: skip
            else:
                runs = [
                    services.training_run_create(
                        method=opts["method"], snapshot=snapshot, parent_version=version, config=config,
                        project=project, documents_dir=opts["documents"], enqueue=not opts["now"],
                    )
                ]  # fmt: skip
        except services.TrainingRunError as exc:
            raise CommandError(str(exc)) from None
        for run in runs:
            if not opts["now"]:
                self.stdout.write(f"queued {run.method} run {run.pk} → {run.output_dir}")
                continue
            if not services.training_run_claim(run_id=run.pk):
                raise CommandError(f"run {run.pk} could not be claimed")

            last = {"step": -1}

            def show(row, process, last=last):
                row.refresh_from_db(fields=["progress_step", "progress_total"])
                if row.progress_step != last["step"]:
                    last["step"] = row.progress_step
                    self.stdout.write(f"run {row.pk}: step {row.progress_step}/{row.progress_total}")

            run = services.training_run_execute(run_id=run.pk, on_poll=show)
            self.stdout.write(f"{run.method} run {run.pk}: {run.status} {run.error}")
            if run.status != "succeeded":
                raise CommandError(run.error or run.status)
