"""Server time of the annotate page with 1,000 items in the project (target: p99 under 20 ms).

    python benchmarks/annotate_page.py
    python benchmarks/annotate_page.py --items 1000 --views 600 --kind ranking

Builds a fresh SQLite database (WAL, as `bin/arbiter up` runs it) in a temporary folder, with a project of
--items items of k responses each (markdown with a list, a code block, a quote and a table; ~1 kB per response), and one annotator.
Then, through Django's full request stack (middleware, session, auth, CSRF, template), it times:

- ``next``: GET the annotate page, which leases a *new* item (the annotator submits the previous one
  between two views, untimed, through the real submit service) — so each view picks an item, stores
  its shuffled order, and renders fresh markdown; as it goes, more and more items are done, which is
  where a bad plan for the "open items" index shows (DESIGN.md);
- ``reload``: GET again while the lease is live (the same item, same order);
- ``baseline``: the login page, which reads no project data, in the same run — the floor of the stack.

Prints one JSON line: items, p50_ms, p99_ms (wall-clock server time of the ``next`` views) plus the reload
and baseline figures, their ratio to the baseline, the CPU time of the same requests (on a shared machine
the wall clock also counts waiting for a core: compare with ``loadavg_1m``), and the SQL statements per view.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RESPONSE = """Here is one way to do it, step {n}. Adding up a list is one of the first things people
write in a new language, and Python makes it short; the care goes into what the list may hold.

1. Read the input and **check** it.
2. Keep a running total; `sum()` does it in one line.

```python
def total(values: list[int]) -> int:
    # {n}: add them up, skipping None
    return sum(v for v in values if v is not None)
```

> Note: for very long inputs a generator keeps memory flat.

If the values are floats, rounding errors add up over long lists: `math.fsum()` tracks the lost
low-order bits and returns the correctly rounded total, at a small cost in speed. For money, use
`decimal.Decimal` throughout and never mix it with floats.

| case | result |
|:-----|-------:|
| [] | 0 |
| [1, 2] | 3 |

That is all there is to it — {tail}
"""


def _django(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ["DEBUG"] = "0"
    os.environ["ARBITER_DATA_DIR"] = str(workdir / "data")
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["ALLOWED_HOSTS"] = "testserver,localhost"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _seed(*, items: int, kind: str, k: int):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from feedback import pii
    from feedback.models import Candidate, Item, ItemCandidate, Prompt
    from feedback.services.projects import membership_set, project_create
    from inference.models import Engine, ModelVersion

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password")
    project = project_create(
        name="Bench",
        task_kind=kind,
        responses_per_item=k,
        guidelines="## Guidelines\n\n* Prefer **correct** answers.\n* Then shorter ones.\n",
    )
    membership_set(project=project, user=user, role="annotator")
    version = ModelVersion.objects.create(name="bench-model", engine=Engine.EXTERNAL)
    prompts = []
    for n in range(items):
        messages = [{"role": "user", "content": f"How do I add up a list of numbers? (variant {n})"}]
        prompts.append(
            Prompt(
                project=project,
                messages=messages,
                text=messages[0]["content"],
                content_hash=pii.messages_hash(messages),
            )
        )
    prompts = Prompt.objects.bulk_create(prompts, batch_size=500)
    candidates = []
    for p in prompts:
        for j in range(k):
            text = RESPONSE.format(n=p.pk * 10 + j, tail="x" * (j * 50))
            candidates.append(
                Candidate(prompt=p, model_version=version, text=text, text_hash=pii.text_hash(text))
            )
    candidates = Candidate.objects.bulk_create(candidates, batch_size=500)
    item_rows = Item.objects.bulk_create(
        [Item(project=project, prompt=p, annotations_required=1) for p in prompts], batch_size=500
    )
    links = []
    for i, item in enumerate(item_rows):
        for j in range(k):
            links.append(ItemCandidate(item=item, candidate=candidates[i * k + j], position=j))
    ItemCandidate.objects.bulk_create(links, batch_size=1000)
    return project, user


def _payload(kind: str, order: list[int]) -> dict:
    if kind == "ranking":
        return {"ranking": list(reversed(order))}
    if kind == "pairwise":
        return {"choice": "A", "strength": None}
    return {"labels": {str(c): "up" for c in order}}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument(
        "--views", type=int, default=600, help="annotate views timed (each leases a new item)"
    )
    parser.add_argument("--kind", choices=["ranking", "pairwise", "binary"], default="ranking")
    parser.add_argument("--k", type=int, default=4, help="responses per item (pairwise: always 2)")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    k = 2 if args.kind == "pairwise" else args.k
    if args.views + args.warmup > args.items:
        parser.error("--views + --warmup must not exceed --items (each view takes a new item)")

    with tempfile.TemporaryDirectory(prefix="arbiter-bench-") as tmp:
        _django(Path(tmp))
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext
        from django.urls import reverse

        from feedback.models import Lease
        from feedback.services.distribution import annotation_submit

        t0 = time.perf_counter()
        project, user = _seed(items=args.items, kind=args.kind, k=k)
        seed_s = time.perf_counter() - t0
        client = Client()
        client.force_login(user)
        url = reverse("annotate", args=[project.slug])
        login_url = reverse("login")
        anon = Client()

        cpu: dict[str, list[float]] = {"next": [], "reload": [], "baseline": []}

        def view(c: Client, u: str, cpu_into: list[float] | None = None) -> float:
            cpu_start = time.thread_time()
            start = time.perf_counter()
            response = c.get(u)
            elapsed = (time.perf_counter() - start) * 1000
            if cpu_into is not None:
                cpu_into.append((time.thread_time() - cpu_start) * 1000)
            assert response.status_code == 200, (u, response.status_code)
            return elapsed

        def submit_current(n: int) -> None:
            lease = Lease.objects.get(annotator=user)
            annotation_submit(
                user=user,
                item_id=lease.item_id,
                payload=_payload(args.kind, lease.order_shown),
                idempotency_key=f"bench-{n}",
                time_spent_ms=1000,
            )

        next_ms: list[float] = []
        reload_ms: list[float] = []
        baseline_ms: list[float] = []
        for n in range(args.warmup + args.views):
            timed = n >= args.warmup
            fresh = view(client, url, cpu["next"] if timed else None)
            again = view(client, url, cpu["reload"] if timed else None)
            base = view(anon, login_url, cpu["baseline"] if timed else None)
            if timed:
                next_ms.append(fresh)
                reload_ms.append(again)
                baseline_ms.append(base)
            submit_current(n)

        with CaptureQueriesContext(connection) as queries:
            view(client, url)
        sql_next = len(queries)
        with CaptureQueriesContext(connection) as queries:
            view(client, url)
        sql_reload = len(queries)

        p50, p99 = statistics.median(next_ms), _pct(next_ms, 0.99)
        base50 = statistics.median(baseline_ms)
        print(
            json.dumps(
                {
                    "items": args.items,
                    "p50_ms": round(p50, 2),
                    "p99_ms": round(p99, 2),
                    "kind": args.kind,
                    "responses_per_item": k,
                    "response_chars": round(
                        statistics.mean(len(RESPONSE.format(n=10**5, tail="x" * (j * 50))) for j in range(k))
                    ),
                    "views": len(next_ms),
                    "items_done_at_end": args.warmup + args.views,
                    "max_ms": round(max(next_ms), 2),
                    "reload_p50_ms": round(statistics.median(reload_ms), 2),
                    "reload_p99_ms": round(_pct(reload_ms, 0.99), 2),
                    "baseline_login_p50_ms": round(base50, 2),
                    "baseline_login_p99_ms": round(_pct(baseline_ms, 0.99), 2),
                    "p50_vs_baseline": round(p50 / base50, 2),
                    # CPU time of the request's thread: the server's own work, without the waits for a
                    # core that a busy shared machine adds to the wall-clock figures above.
                    "cpu_p50_ms": round(statistics.median(cpu["next"]), 2),
                    "cpu_p99_ms": round(_pct(cpu["next"], 0.99), 2),
                    "reload_cpu_p50_ms": round(statistics.median(cpu["reload"]), 2),
                    "baseline_login_cpu_p50_ms": round(statistics.median(cpu["baseline"]), 2),
                    "sql_per_view_next": sql_next,
                    "sql_per_view_reload": sql_reload,
                    "target_p99_ms": 20,
                    "meets_target": p99 < 20,
                    "seed_s": round(seed_s, 1),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
            )
        )


if __name__ == "__main__":
    main()
