"""Export labels as a TRL-ready snapshot (JSONL, Parquet, a datasets folder), or write an existing one again.

manage.py export --project demo --kind preference --name "round 1" --out /tmp/round1
manage.py export --project demo --kind unpaired --aggregation majority --preview
manage.py export --snapshot 3 --out /tmp/again        # byte-identical to the first write
manage.py export --list
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback.exports.rows import source_count
from feedback.exports.services import (
    DEFAULT_FORMATS,
    SnapshotChangedError,
    snapshot_create,
    snapshot_mark_failed,
    snapshot_preview,
    snapshot_push_to_hub,
    snapshot_spec,
    snapshot_write,
)
from feedback.exports.spec import AGGREGATIONS, RANKING_PAIRS, STYLES, TIES, ExportSpec, ExportSpecError
from feedback.models import DatasetSnapshot, Project, SnapshotKind, TaskKind


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        what = parser.add_argument_group("what to do")
        what.add_argument(
            "--snapshot", type=int, help="write this existing snapshot again (its hash must match)"
        )
        what.add_argument("--list", action="store_true", help="list snapshots and exit")
        what.add_argument(
            "--preview", action="store_true", help="print counts for the filters; write nothing"
        )
        what.add_argument("--name", help="name of the new snapshot (default: the kind and projects)")
        what.add_argument(
            "--out", help="folder to write to (default: ARBITER_EXPORTS_DIR/snapshot-<id>-<name>)"
        )
        what.add_argument(
            "--formats", default=",".join(DEFAULT_FORMATS), help="jsonl,parquet,hf (comma-separated)"
        )
        what.add_argument(
            "--push-to-hub", metavar="OWNER/NAME", help="upload the datasets folder (needs HF_TOKEN)"
        )
        f = parser.add_argument_group("filters (see the dataset card)")
        f.add_argument(
            "--project", action="append", default=[], help="project slug or id (repeat for several)"
        )
        f.add_argument("--kind", choices=SnapshotKind.values, default=SnapshotKind.PREFERENCE)
        f.add_argument("--date-from", help="annotations made at or after (ISO date or datetime)")
        f.add_argument("--date-to", help="annotations made at or before")
        f.add_argument("--task-kinds", type=_csv, default=[], help=f"comma-separated, of {TaskKind.values}")
        f.add_argument(
            "--model-versions", type=_csv, default=[], help="model version ids (both sides of a pair)"
        )
        f.add_argument("--min-agreement", type=float, default=0.0)
        f.add_argument("--min-votes", type=int, default=1)
        f.add_argument("--include-flagged-annotators", action="store_true")
        f.add_argument("--include-gold", action="store_true")
        f.add_argument("--include-truncated", action="store_true", help="keep cut-off candidates (flagged)")
        f.add_argument("--aggregation", choices=AGGREGATIONS, default="all")
        f.add_argument("--ranking-pairs", choices=RANKING_PAIRS, default="all")
        f.add_argument("--ties", choices=TIES, default="drop")
        f.add_argument("--no-margin", action="store_true")
        f.add_argument("--style", choices=STYLES, default="conversational")
        f.add_argument(
            "--include-sources", action="store_true", help="add item/candidate ids, votes, agreement"
        )
        f.add_argument("--license", default="other")
        f.add_argument("--seed", type=int, default=0)
        f.add_argument("--test-fraction", type=float, default=0.1)

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["list"]:
            for snap in DatasetSnapshot.objects.order_by("id"):
                counts = snap.row_counts or {}
                self.stdout.write(
                    f"{snap.pk:>5}  {snap.status:<8} {snap.kind:<10} train={counts.get('train', '-'):<8} "
                    f"test={counts.get('test', '-'):<8} {snap.content_hash[:12] or '-':<12}  {snap.name}"
                )
            return
        formats = tuple(_csv(opts["formats"]))
        try:
            if opts["snapshot"]:
                snap = DatasetSnapshot.objects.filter(pk=opts["snapshot"]).first()
                if snap is None:
                    raise CommandError(f"no snapshot {opts['snapshot']}")
                spec = snapshot_spec(snap)
            else:
                spec = self._spec(opts)
                if opts["preview"]:
                    preview = snapshot_preview(
                        spec=spec, seed=opts["seed"], test_fraction=opts["test_fraction"]
                    )
                    self.stdout.write(
                        json.dumps(
                            {
                                "row_counts": preview.row_counts,
                                "columns": preview.columns,
                                "stats": preview.stats,
                            },
                            indent=2,
                        )
                    )
                    return
                name = opts["name"] or f"{spec.kind} of {', '.join(opts['project'])}"
                snap = snapshot_create(
                    name=name, spec=spec, seed=opts["seed"], test_fraction=opts["test_fraction"]
                )
                self.stderr.write(f"snapshot {snap.pk} created ({snap.name})")
            self._write(snap, spec, formats, opts["out"])
            if opts["push_to_hub"]:
                url = snapshot_push_to_hub(snapshot=snap, repo_id=opts["push_to_hub"])
                self.stdout.write(f"pushed to {url}")
        except ExportSpecError as exc:
            raise CommandError(str(exc)) from None
        except SnapshotChangedError as exc:
            raise CommandError(str(exc)) from None

    def _spec(self, opts: dict[str, Any]) -> ExportSpec:
        if not opts["project"]:
            raise CommandError("name at least one --project (slug or id), or --snapshot ID")
        ids = []
        for ref in opts["project"]:
            project = Project.objects.filter(slug=ref).first() or (
                Project.objects.filter(pk=int(ref)).first() if ref.isdigit() else None
            )
            if project is None:
                raise CommandError(f"--project {ref}: no project with that slug or id")
            ids.append(project.pk)
        return ExportSpec(
            kind=opts["kind"],
            project_ids=ids,
            date_from=opts["date_from"],
            date_to=opts["date_to"],
            task_kinds=opts["task_kinds"],
            model_version_ids=opts["model_versions"],
            min_agreement=opts["min_agreement"],
            min_votes=opts["min_votes"],
            include_flagged_annotators=opts["include_flagged_annotators"],
            include_gold=opts["include_gold"],
            include_truncated=opts["include_truncated"],
            aggregation=opts["aggregation"],
            ranking_pairs=opts["ranking_pairs"],
            ties=opts["ties"],
            include_margin=not opts["no_margin"],
            style=opts["style"],
            include_sources=opts["include_sources"],
            license=opts["license"],
        )

    def _write(
        self, snap: DatasetSnapshot, spec: ExportSpec, formats: tuple[str, ...], out: str | None
    ) -> None:
        from tqdm import tqdm

        total = source_count(spec, snap.frozen)
        with tqdm(
            total=total, unit="row", desc=f"snapshot {snap.pk}", file=self.stderr._out, leave=False
        ) as bar:
            try:
                result = snapshot_write(snapshot=snap, formats=formats, out_dir=out, progress=bar.update)
            except SnapshotChangedError:
                raise
            except Exception as exc:
                snapshot_mark_failed(snapshot=snap, error=f"{type(exc).__name__}: {exc}")
                raise
        self.stdout.write(
            json.dumps(
                {
                    "snapshot_id": snap.pk,
                    "path": str(result.path),
                    "content_hash": result.content_hash,
                    "row_counts": result.row_counts,
                    "dropped": result.stats["dropped"],
                    "mean_agreement": result.stats["mean_agreement"],
                }
            )
        )
