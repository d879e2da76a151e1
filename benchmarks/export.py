"""Export throughput and memory: seed N preference rows, export them as JSONL and as Parquet, on SQLite and PostgreSQL.

    python benchmarks/export.py --rows 1000000
    python benchmarks/export.py --rows 100000 --db sqlite --formats jsonl

Seeds a ranking project (k=4, one vote per item, so 6 preference pairs per annotation) with raw SQL
(no ORM objects: 1 M rows in seconds), makes a snapshot through the real service, then writes it
with ``snapshot_write`` in a fresh subprocess per (database, format) so that each peak RSS is the
export's own. Prints one JSON line per run: ``db, format, rows, rows_per_s, peak_rss_mb`` (plus the
seconds, the file size and the machine's load). A baseline in the same command — the naive way (ORM
objects with select_related, the whole file built in memory, then json.dump) on a slice of the same
rows — gives ``vs_baseline`` ratios. Targets: >= 50,000 rows/s and < 200 MB peak RSS.

PostgreSQL: ``--pg-url`` (default postgres://postgres@127.0.0.1:5432/arbiter_exports): the database is
dropped and created afresh. SQLite: a file under ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILLER = (
    "This answer explains the idea step by step, with one short example and a reason — "
    "so the reader can check it quickly (été, naïve, 東京)."
)


def _django(db_url: str, workdir: Path) -> None:
    os.environ["DATABASE_URL"] = db_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["DEBUG"] = "0"
    os.environ["ARBITER_DATA_DIR"] = str(workdir / "data")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- seeding ---------------------------------------------------------------------------------
def _seed_sql(
    vendor: str, *, items: int, rows: int, project_id: int, user_id: int, version_id: int
) -> list[str]:
    """INSERT ... SELECT statements generating prompts, candidates, items, annotations and pairs."""
    now = "CURRENT_TIMESTAMP"
    if vendor == "postgresql":
        seq = f"generate_series(1, {items}) AS s(n)"
        hexid = "lpad(to_hex({x}), 64, '0')"
        cat = "||"
        false = "false"
        js = "CAST({} AS jsonb)"
    else:
        seq = f"(WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {items}) SELECT n FROM c) AS s"
        hexid = "printf('%064x', {x})"
        cat = "||"
        false = "0"
        js = "{}"
    j4 = "(SELECT 0 AS j UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) AS jj"
    pairs6 = (
        "(SELECT 0 AS k, 0 AS a, 1 AS b, 1.0 AS m UNION ALL SELECT 1, 0, 2, 2.0 UNION ALL SELECT 2, 0, 3, 3.0 "
        "UNION ALL SELECT 3, 1, 2, 1.0 UNION ALL SELECT 4, 1, 3, 2.0 UNION ALL SELECT 5, 2, 3, 1.0) AS kk"
    )
    msg = (
        f'\'[{{"role": "user", "content": "Question number \' {cat} CAST(n AS TEXT) {cat} '
        f"': how would you explain this to a new colleague?\"}}]'"
    )
    text = (
        f"'Question number ' {cat} CAST(n AS TEXT) {cat} ': how would you explain this to a new colleague?'"
    )
    cand_text = f"'Answer ' {cat} CAST(j AS TEXT) {cat} ' to question ' {cat} CAST(n AS TEXT) {cat} '. ' {cat} '{FILLER}'"
    c = "(4 * (n - 1) + {j} + 1)"
    payload = (
        f"'{{\"ranking\": [[' {cat} CAST({c.format(j=0)} AS TEXT) {cat} '], [' {cat} CAST({c.format(j=1)} AS TEXT) "
        f"{cat} '], [' {cat} CAST({c.format(j=2)} AS TEXT) {cat} '], [' {cat} CAST({c.format(j=3)} AS TEXT) {cat} ']]}}'"
    )
    order = (
        f"'[' {cat} CAST({c.format(j=2)} AS TEXT) {cat} ', ' {cat} CAST({c.format(j=0)} AS TEXT) {cat} ', ' "
        f"{cat} CAST({c.format(j=3)} AS TEXT) {cat} ', ' {cat} CAST({c.format(j=1)} AS TEXT) {cat} ']'"
    )
    return [
        "INSERT INTO feedback_prompt (id, project_id, messages, text, metadata, content_hash, pii_kinds, created_at) "
        f"SELECT n, {project_id}, {js.format(msg)}, {text}, {js.format(chr(39) + '{}' + chr(39))}, "
        f"{hexid.format(x='n')}, {js.format(chr(39) + '[]' + chr(39))}, {now} FROM {seq}",
        "INSERT INTO feedback_candidate (id, prompt_id, model_version_id, text, text_hash, sampling_params, "
        "finish_reason, created_at) "
        f"SELECT 4 * (n - 1) + j + 1, n, {version_id}, {cand_text}, {hexid.format(x='4 * (n - 1) + j + 1')}, "
        f"{js.format(chr(39) + '{}' + chr(39))}, 'stop', {now} FROM {seq} CROSS JOIN {j4}",
        "INSERT INTO feedback_item (id, project_id, prompt_id, annotations_required, annotations_count, is_open, "
        f"is_gold, priority, created_at) SELECT n, {project_id}, n, 1, 1, {false}, {false}, 0, {now} FROM {seq}",
        "INSERT INTO feedback_itemcandidate (id, item_id, candidate_id, position) "
        f"SELECT 4 * (n - 1) + j + 1, n, 4 * (n - 1) + j + 1, j FROM {seq} CROSS JOIN {j4}",
        "INSERT INTO feedback_annotation (id, item_id, annotator_id, kind, payload, order_shown, time_spent_ms, "
        "comment, flags, idempotency_key, created_at) "
        f"SELECT n, n, {user_id}, 'ranking', {js.format(payload)}, {js.format(order)}, 1000, '', "
        f"{js.format(chr(39) + '[]' + chr(39))}, 'k' {cat} CAST(n AS TEXT), {now} "
        f"FROM {seq}",
        "INSERT INTO feedback_preferencepair (id, annotation_id, prompt_id, chosen_id, rejected_id, is_tie, margin, "
        "created_at) "
        f"SELECT 6 * (n - 1) + k + 1, n, n, 4 * (n - 1) + a + 1, 4 * (n - 1) + b + 1, {false}, m, {now} "
        f"FROM {seq} CROSS JOIN {pairs6} WHERE 6 * (n - 1) + k + 1 <= {rows}",
    ]


def phase_seed(args) -> None:
    workdir = Path(args.workdir)
    _django(args.db_url, workdir)
    from django.core.management import call_command
    from django.db import connection

    if args.reuse:
        from feedback.models import DatasetSnapshot, PreferencePair

        snap = DatasetSnapshot.objects.filter(name="bench").order_by("id").first()
        if snap is None or PreferencePair.objects.count() != args.rows:
            raise SystemExit("--reuse: no seeded benchmark database with that many rows; run without --reuse")
        print(json.dumps({"snapshot_id": snap.pk, "seed_s": 0, "items": -(-args.rows // 6)}))
        return

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from feedback.exports.services import snapshot_create
    from feedback.services.projects import project_create
    from inference.models import Engine, ModelVersion

    t0 = time.perf_counter()
    user = get_user_model().objects.create_user(username="bench", password="x")
    project = project_create(name="Export benchmark", task_kind="ranking", responses_per_item=4)
    version = ModelVersion.objects.create(name="bench-v1", engine=Engine.EXTERNAL)
    items = -(-args.rows // 6)
    vendor = connection.vendor
    with connection.cursor() as cur:
        if vendor == "sqlite":
            cur.execute("PRAGMA synchronous=OFF")
        for sql in _seed_sql(
            vendor, items=items, rows=args.rows, project_id=project.id, user_id=user.id, version_id=version.id
        ):
            cur.execute(sql)
        if vendor == "postgresql":
            for table in ("prompt", "candidate", "item", "itemcandidate", "annotation", "preferencepair"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('feedback_{table}', 'id'), "
                    f"(SELECT MAX(id) FROM feedback_{table}))"
                )
            cur.execute("ANALYZE")
        else:
            cur.execute("ANALYZE")
    seed_s = time.perf_counter() - t0
    snap = snapshot_create(
        name="bench", spec={"kind": "preference", "project_ids": [project.id]}, seed=0, test_fraction=0.1
    )
    print(json.dumps({"snapshot_id": snap.pk, "seed_s": round(seed_s, 1), "items": items}))


def phase_export(args) -> None:
    workdir = Path(args.workdir)
    _django(args.db_url, workdir)
    from feedback.exports.services import snapshot_write
    from feedback.models import DatasetSnapshot

    snap = DatasetSnapshot.objects.get(pk=args.snapshot_id)
    out = workdir / f"out-{args.db}-{args.format}"
    shutil.rmtree(out, ignore_errors=True)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    result = snapshot_write(snapshot=snap, formats=(args.format,), out_dir=out)
    seconds = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    rows = result.row_counts["train"] + result.row_counts["test"]
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": round(seconds, 2),
                "rows_per_s": round(rows / seconds),
                "peak_rss_mb": _peak_rss_mb(),
                "cpu_s": round(cpu_s, 2),
                "file_mb": round(size / 2**20, 1),
                "content_hash": result.content_hash,
            }
        )
    )
    shutil.rmtree(out, ignore_errors=True)


def phase_baseline(args) -> None:
    """The naive export: ORM objects, every row in a list in memory, one json.dump at the end."""
    workdir = Path(args.workdir)
    _django(args.db_url, workdir)
    from feedback.models import PreferencePair

    out = workdir / f"baseline-{args.db}.json"
    t0 = time.perf_counter()
    rows = []
    qs = PreferencePair.objects.select_related("prompt", "chosen", "rejected", "annotation__item").order_by(
        "id"
    )
    for pair in qs[: args.baseline_rows]:
        rows.append(
            {
                "prompt": pair.prompt.messages,
                "chosen": [{"role": "assistant", "content": pair.chosen.text}],
                "rejected": [{"role": "assistant", "content": pair.rejected.text}],
                "margin": pair.margin,
            }
        )
    with out.open("w", encoding="utf-8") as fh:
        json.dump(rows, fh, ensure_ascii=False)
    seconds = time.perf_counter() - t0
    out.unlink()
    print(
        json.dumps(
            {
                "rows": len(rows),
                "seconds": round(seconds, 2),
                "rows_per_s": round(len(rows) / seconds),
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    )


def _child(args, phase: str, **extra) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--db",
        args.db,
        "--db-url",
        args.db_url,
        "--workdir",
        args.workdir,
    ]
    cmd += ["--rows", str(args.rows), "--baseline-rows", str(args.baseline_rows)]
    cmd += ["--reuse"] if args.reuse else []
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{phase} on {args.db} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _reset_pg(url: str) -> None:
    from urllib.parse import urlparse

    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--db", default="sqlite,postgresql", help="sqlite, postgresql or both (comma-separated)"
    )
    parser.add_argument("--formats", default="jsonl,parquet")
    parser.add_argument(
        "--baseline-rows", type=int, default=20_000, help="rows for the naive baseline (0: skip)"
    )
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/arbiter_exports")
    parser.add_argument("--workdir", default="/tmp/arbiter-export-bench")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file (for profiling or --reuse)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="export what an earlier --keep run seeded (PostgreSQL: the database as left)",
    )
    parser.add_argument("--phase", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--db-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--format", default="jsonl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "seed":
        return phase_seed(args)
    if args.phase == "export":
        return phase_export(args)
    if args.phase == "baseline":
        return phase_baseline(args)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for db in [d.strip() for d in args.db.split(",") if d.strip()]:
        if db in ("postgres", "postgresql", "pg"):
            db = "postgresql"
            if not args.reuse:
                _reset_pg(args.pg_url)
            args.db_url = args.pg_url
        elif db == "sqlite":
            path = workdir / "export-bench.sqlite3"
            for suffix in ("", "-wal", "-shm") if not args.reuse else ():
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            args.db_url = f"sqlite:///{path}"
        else:
            raise SystemExit(f"unknown --db {db!r}")
        args.db = db
        seeded = _child(args, "seed")
        sys.stderr.write(
            f"# {db}: seeded {args.rows} pairs ({seeded['items']} rankings) in {seeded['seed_s']} s\n"
        )
        baseline = _child(args, "baseline") if args.baseline_rows else None
        if baseline:
            sys.stderr.write(f"# {db}: naive baseline {json.dumps(baseline)}\n")
        for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
            load_before = os.getloadavg()[0]
            res = _child(args, "export", snapshot_id=seeded["snapshot_id"], format=fmt)
            line = {
                "db": db,
                "format": fmt,
                "rows": res["rows"],
                "rows_per_s": res["rows_per_s"],
                "peak_rss_mb": res["peak_rss_mb"],
                "seconds": res["seconds"],
                "cpu_s": res["cpu_s"],
                "rows_per_cpu_s": round(res["rows"] / max(res["cpu_s"], 1e-9)),
                "file_mb": res["file_mb"],
                "load_1m": round(max(load_before, os.getloadavg()[0]), 2),
                "cpus": os.cpu_count(),
            }
            if baseline:
                line["vs_baseline"] = {
                    "speed_x": round(res["rows_per_s"] / max(baseline["rows_per_s"], 1), 1),
                    "baseline_rows_per_s": baseline["rows_per_s"],
                    "baseline_rows": baseline["rows"],
                    "baseline_peak_rss_mb": baseline["peak_rss_mb"],
                }
            line["targets_met"] = res["rows_per_s"] >= 50_000 and res["peak_rss_mb"] < 200
            print(json.dumps(line), flush=True)
        if db == "sqlite" and not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{workdir / 'export-bench.sqlite3'}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
