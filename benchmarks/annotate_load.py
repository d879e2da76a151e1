"""Load benchmark of task distribution over HTTP: simulated annotators doing next → submit.

    python benchmarks/annotate_load.py                       # SQLite and PostgreSQL, three shapes, 10 s each
    python benchmarks/annotate_load.py --db sqlite --seconds 5
    python benchmarks/annotate_load.py --pg-url postgres://postgres@127.0.0.1:5432/postgres

For each database it builds a fresh database (SQLite in WAL mode in a temporary folder; PostgreSQL as the
database ``arbiter_loadbench``, dropped and created), migrates it, seeds 50,000 pairwise items (two
candidates from two model versions each, 3 annotations required) and 64 annotators with API tokens, and starts
the app under gunicorn on 127.0.0.1 (production settings, DEBUG off). Then, for each shape

    1 annotator, no pause · 32 annotators, no pause (saturation) · 64 annotators, ~500 ms pause (exponential;
    each annotator also starts each slice after such a pause, so that they do not all ask at once)

it runs, for --seconds each, on the same server and connections: the *ceiling* (``/api/v1/bench/...``: the same
framework, token header, JSON parsing and submit input serializer, but no database) and the *real* loop
(``POST /projects/<id>/next/`` then ``POST /items/<id>/submit/`` with an idempotency key). Each simulated
annotator keeps one HTTP/1.1 keep-alive connection (asyncio, one client process). The two are interleaved in
--slices slices each, in the order ceiling, real, real, ceiling, ..., so that a machine whose speed drifts
(shared with other work) slows both alike.

Prints one JSON line per database and shape with: db, annotators, think_ms, cycles_per_s, next_p99_ms,
submit_p99_ms, errors (non-2xx answers and failed connections), over_assigned (items holding more
annotations, or more annotations + live leases, than required — counted in the database after the shape),
queries_per_request (mean SQL statements per next/submit request, from the app's X-SQL-Statements header:
every statement sent through Django's cursor, BEGIN included; COMMIT is a connection call and not counted),
ceiling_cycles_per_s — and, beyond those: ratio (cycles_per_s / ceiling_cycles_per_s), next_p50_ms,
submit_p50_ms, client_cpu_pct (the load generator's own CPU, % of one core, in the real phase), loadavg_1m
(the machine is shared), workers (the server's processes x threads), and CPU milliseconds per completed cycle
for the real loop and (prefixed ``ceiling_``) the ceiling: server_user / server_sys (the server's processes, from
/proc), machine_busy (every core's busy time, client and database server included), softirq (loopback TCP) and
steal (time the host gave to other guests: when it is more than a fraction of a millisecond, the machine was
contended and the run says little).

Targets on a 2-core machine: 1 annotator p99 < 15 ms (next and submit); 32 no pause: SQLite >= 0.6 x ceiling,
PostgreSQL >= 0.4 x ceiling, p99 < 400 ms; 64 pausing: p99 < 50 ms; everywhere 0 errors, 0 over-assigned,
<= 5 SQL statements per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SHAPES = ((1, 0), (32, 0), (64, 500))
PG_DB = "arbiter_loadbench"


# ---- database setup (runs in a child process with the benchmark database's environment) --------------------


def seed(items: int, annotators: int, required: int) -> dict[str, Any]:
    """Project, model versions, prompts/candidates/items, annotators with tokens. Bulk inserts."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from feedback import pii
    from feedback.models import Candidate, Item, ItemCandidate, Membership, Project, Prompt
    from inference.models import Engine, ModelVersion

    user_model = get_user_model()
    with transaction.atomic():
        project = Project.objects.create(
            name="Load benchmark",
            slug="load-benchmark",
            task_kind="pairwise",
            responses_per_item=2,
            annotations_required=required,
            lease_ttl_seconds=600,
        )
        v1 = ModelVersion.objects.create(name="bench-base", engine=Engine.EXTERNAL)
        v2 = ModelVersion.objects.create(name="bench-dpo", engine=Engine.EXTERNAL)
        batch = 5000
        for start in range(0, items, batch):
            n = range(start, min(start + batch, items))
            prompts = Prompt.objects.bulk_create(
                Prompt(
                    project=project,
                    messages=[{"role": "user", "content": f"Question {i}: how do I sort a list?"}],
                    text=f"Question {i}: how do I sort a list?",
                    content_hash=pii.text_hash(f"q{i}"),
                )
                for i in n
            )
            cands = Candidate.objects.bulk_create(
                Candidate(
                    prompt=p,
                    model_version=v,
                    text=f"Answer {j} by {v.name}: use sorted(xs), or xs.sort() in place. " * 3,
                    text_hash=pii.text_hash(f"{p.pk}-{j}"),
                )
                for p in prompts
                for j, v in enumerate((v1, v2))
            )
            made = Item.objects.bulk_create(
                Item(project=project, prompt=p, annotations_required=required) for p in prompts
            )
            ItemCandidate.objects.bulk_create(
                ItemCandidate(item=item, candidate=cands[2 * k + pos], position=pos)
                for k, item in enumerate(made)
                for pos in (0, 1)
            )
        users = user_model.objects.bulk_create(
            user_model(username=f"annotator{i:02d}", password="!") for i in range(annotators)
        )
        users = list(user_model.objects.filter(username__startswith="annotator").order_by("username"))
        Membership.objects.bulk_create(Membership(project=project, user=u, role="annotator") for u in users)
        tokens = Token.objects.bulk_create(Token(key=Token.generate_key(), user=u) for u in users)
    return {"project_id": project.pk, "tokens": [t.key for t in tokens]}


def census(project_id: int) -> dict[str, int]:
    """Items over their quota (annotations, or annotations + live leases), and annotations stored."""
    import django

    django.setup()
    from django.db.models import Count, F, Q
    from django.utils import timezone

    from feedback.models import Annotation, Item

    items = Item.objects.filter(project_id=project_id)
    rows = items.annotate(
        n=Count("annotations", distinct=True),
        live=Count("leases", filter=Q(leases__expires_at__gt=timezone.now()), distinct=True),
    )
    over = rows.filter(
        Q(n__gt=F("annotations_required"))
        | Q(annotations_count__gt=F("annotations_required"))
        | Q(annotations_count__lt=F("n"))
        | Q(live__gt=F("annotations_required") - F("n"))
    ).count()
    return {
        "over_assigned": over,
        "annotations": Annotation.objects.filter(item__project_id=project_id).count(),
    }


# ---- HTTP client ---------------------------------------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection (the load generator must be cheap: no client library)."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        return await self.request("POST", path, body)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Token {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        data = await self.reader.readexactly(length) if length else b""
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        return status, headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class Cpu:
    """CPU seconds spent: by the server's processes (user, system) and by the whole machine (busy, of which
    softirq: loopback TCP is processed there, outside any process's own time; and steal: time the host gave
    to other guests, a sign of a contended machine)."""

    server_user: float = 0.0
    server_sys: float = 0.0
    machine_busy: float = 0.0
    machine_softirq: float = 0.0
    machine_steal: float = 0.0

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def cpu_now(server_pid: int | None) -> Cpu:
    """Read /proc (Linux; zeros elsewhere): the server's process tree and the machine's totals."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return Cpu()
    idle = fields[3] + fields[4]  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    user = system = 0
    if server_pid is not None:
        parents: dict[int, int] = {}
        times: dict[int, tuple[int, int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(rest[1])
            times[int(entry)] = (int(rest[11]), int(rest[12]))
        for pid, (u, s) in times.items():
            p = pid
            while p not in (server_pid, 0, 1) and p in parents:
                p = parents[p]
            if p == server_pid:
                user, system = user + u, system + s
    return Cpu(user / tick, system / tick, busy / tick, fields[6] / tick, fields[7] / tick)


@dataclass
class PhaseResult:
    cycles: int = 0
    errors: int = 0
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    done: int = 0  # cycles completed, those finished after their slice's deadline too (for CPU per cycle)
    cpu: Cpu = field(default_factory=Cpu)


async def annotator(
    conn: Conn, result: PhaseResult, *, ceiling: bool, project_id: int, think_ms: float, deadline: float
) -> None:
    rng = random.Random()
    next_path = "/api/v1/bench/next/" if ceiling else f"/api/v1/projects/{project_id}/next/"

    async def pause() -> None:
        """The annotator's think time, after every attempt (a failed one too: no tight error loop); never past
        the deadline (the next slice starts when every annotator is back)."""
        if think_ms:
            wait = rng.expovariate(1.0 / (think_ms / 1000.0))
            await asyncio.sleep(max(0.0, min(wait, deadline - time.perf_counter())))

    # Staggered start: the residual think time of an annotator already at work is exponential with the same
    # mean (memoryless), so the phase begins in the steady state. Without it all 64 pausing annotators ask at
    # the same millisecond: a burst no human team makes, which alone set the shape's p99 (100-180 ms in the
    # first 0.1 s; 19-29 ms over the rest, measured 2026-12-02).
    await pause()
    while time.perf_counter() < deadline:
        try:
            t0 = time.perf_counter()
            status, headers, data = await conn.post(next_path)
            t1 = time.perf_counter()
            if status != 200:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"next {status} {data[:200]!r}")
                await pause()
                continue
            lease = json.loads(data)
            body = json.dumps(
                {
                    "payload": {"choice": rng.choice("AB")},
                    "idempotency_key": uuid.uuid4().hex,
                    "time_spent_ms": rng.randint(2000, 20000),
                }
            ).encode()
            submit_path = (
                f"/api/v1/bench/items/{lease['item_id']}/submit/"
                if ceiling
                else f"/api/v1/items/{lease['item_id']}/submit/"
            )
            status2, headers2, data2 = await conn.post(submit_path, body)
            t2 = time.perf_counter()
            if status2 != 201:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"submit {status2} {data2[:200]!r}")
                await pause()
                continue
            result.done += 1
            if t2 <= deadline:
                result.cycles += 1
                result.next_ms.append((t1 - t0) * 1000)
                result.submit_ms.append((t2 - t1) * 1000)
                for h in (headers, headers2):
                    if "x-sql-statements" in h:
                        result.statements.append(int(h["x-sql-statements"]))
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(f"{type(exc).__name__}: {exc}")
            conn.close()
        await pause()


async def run_shape(
    port: int,
    tokens: list[str],
    *,
    project_id: int,
    think_ms: float,
    seconds: float,
    slices: int,
    server_pid: int | None = None,
) -> tuple[PhaseResult, float, PhaseResult, float, float]:
    """The ceiling and the real loop of one shape, interleaved: ``slices`` slices of each, in the order
    C R R C C R ... (ABBA), each ``seconds / slices`` long, on the same connections. On a machine whose speed
    drifts from one ten-second phase to the next (it shares its host), back-to-back phases measured the two
    sides at different speeds (the ceiling of one configuration moved between 478 and 752 cycles/s in one
    set of runs, 2026-12-02); interleaved slices expose both sides to the same drift.
    Returns (ceiling, its seconds, real, its seconds, the client's CPU seconds in the real slices); each
    PhaseResult also holds the CPU its slices spent (see Cpu) and every cycle they completed, late ones too."""
    conns = [Conn("127.0.0.1", port, t) for t in tokens]
    await asyncio.gather(*(c.open() for c in conns))
    # One untimed request per connection first (the no-database one), as an annotator's open page has made:
    # gunicorn's threaded worker holds a thread on a new connection until its first bytes arrive, so idle new
    # connections would otherwise block the staggered annotators' first requests.
    await asyncio.gather(*(c.post("/api/v1/bench/next/") for c in conns))
    results = {True: PhaseResult(), False: PhaseResult()}
    elapsed = {True: 0.0, False: 0.0}
    cpu = 0.0
    length = seconds / slices
    for k in range(2 * slices):
        ceiling = k % 4 in (0, 3)  # C R R C C R R C ...
        cpu0 = time.process_time()
        used0 = cpu_now(server_pid)
        start = time.perf_counter()
        deadline = start + length
        await asyncio.gather(
            *(
                annotator(
                    c,
                    results[ceiling],
                    ceiling=ceiling,
                    project_id=project_id,
                    think_ms=think_ms,
                    deadline=deadline,
                )
                for c in conns
            )
        )
        elapsed[ceiling] += min(time.perf_counter() - start, length)
        results[ceiling].cpu += cpu_now(server_pid) - used0
        if not ceiling:
            cpu += time.process_time() - cpu0
    for c in conns:
        c.close()
    return results[True], elapsed[True], results[False], elapsed[False], cpu


def cpu_figures(prefix: str, phase: PhaseResult) -> dict[str, float | None]:
    """Milliseconds of CPU per completed cycle: the server's processes (user, system) and the whole machine
    (its busy time: the server, the client, the kernel's softirq work for loopback TCP, anything else)."""
    if not phase.done:
        return {}
    per = {k: round(1000 * v / phase.done, 3) for k, v in vars(phase.cpu).items()}
    return {
        f"{prefix}server_user_ms_per_cycle": per["server_user"],
        f"{prefix}server_sys_ms_per_cycle": per["server_sys"],
        f"{prefix}machine_busy_ms_per_cycle": per["machine_busy"],
        f"{prefix}softirq_ms_per_cycle": per["machine_softirq"],
        f"{prefix}steal_ms_per_cycle": per["machine_steal"],
    }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q / 100.0 * len(s)))], 2)


# ---- orchestration -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_py(env: dict[str, str], code: str) -> Any:
    out = subprocess.run([PYTHON, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare_db(db: str, args: argparse.Namespace, folder: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "load-benchmark-" + "x" * 40,
        "ARBITER_DATA_DIR": str(folder),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    if db == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{folder / 'load.sqlite3'}"
    else:
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PG_DB}")
        base = args.pg_url.rsplit("/", 1)[0]
        env["DATABASE_URL"] = f"{base}/{PG_DB}"
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL
    )
    return env


def start_server(
    env: dict[str, str], port: int, workers: int, threads: int, folder: Path
) -> subprocess.Popen:
    server_env = {
        **env,
        "ARBITER_BENCH_ENDPOINTS": "1",
        "ARBITER_COUNT_SQL": "1",
        "API_THROTTLE_USER": "1000000/min",  # the throttle still runs (its cost is counted), it never trips
    }
    cmd = [
        PYTHON,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--keep-alive",
        "30",
        "--backlog",
        "512",
        "--log-level",
        "warning",
    ]
    log = (folder / f"gunicorn-{port}.log").open("w")
    proc = subprocess.Popen(
        cmd, env=server_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((folder / f"gunicorn-{port}.log").read_text()[-3000:]) from None
            time.sleep(0.1)
    raise RuntimeError("gunicorn did not start")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


async def warm(port: int, tokens: list[str], rounds: int = 6) -> None:
    """Load every worker: imports, database connection, and each token in its token cache (a first use costs
    one more SQL statement; after `rounds` passes a (worker, token) pair is cold with odds 2**-rounds)."""
    conns = [Conn("127.0.0.1", port, t) for t in tokens]
    for _ in range(rounds):
        for c in conns:
            status, _, data = await c.request("GET", "/api/v1/auth/me/")
            if status != 200:
                raise RuntimeError(f"warm-up failed: {status} {data[:300]!r}")
            c.close()  # a new connection may land on another worker


def bench_db(db: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="arbiter-load-") as tmp:
        folder = Path(tmp)
        t0 = time.time()
        env = prepare_db(db, args, folder)
        seeded = run_py(
            env,
            "import json; from benchmarks.annotate_load import seed; "
            f"print(json.dumps(seed({args.items}, {args.annotators}, {args.required})))",
        )
        # Statistics after the import, as a production server's autovacuum would gather them (it is off on
        # this machine's PostgreSQL; without statistics its planner sorts every open item on each pick).
        run_py(
            env,
            "import json, django; django.setup(); from django.db import connection; "
            "connection.cursor().execute('ANALYZE'); print(json.dumps(True))",
        )
        print(
            f"# {db}: migrated and seeded {args.items} items, {args.annotators} annotators in "
            f"{time.time() - t0:.0f} s",
            file=sys.stderr,
        )
        workers, threads = (
            (args.sqlite_workers, args.sqlite_threads)
            if db == "sqlite"
            else (args.pg_workers, args.pg_threads)
        )
        port = free_port()
        server = start_server(env, port, workers, threads, folder)
        try:
            tokens = seeded["tokens"]
            project_id = seeded["project_id"]
            asyncio.run(warm(port, tokens))
            for n, think in args.shapes:
                use = tokens[:n]
                ceiling, c_secs, real, r_secs, cpu = asyncio.run(
                    run_shape(
                        port,
                        use,
                        project_id=project_id,
                        think_ms=think,
                        seconds=args.seconds,
                        slices=args.slices,
                        server_pid=server.pid,
                    )
                )
                counts = run_py(
                    env,
                    f"import json; from benchmarks.annotate_load import census; print(json.dumps(census({project_id})))",
                )
                cycles = real.cycles / r_secs
                ceiling_cycles = ceiling.cycles / c_secs
                line = {
                    "db": db,
                    "annotators": n,
                    "think_ms": think,
                    "cycles_per_s": round(cycles, 1),
                    "next_p99_ms": pct(real.next_ms, 99),
                    "submit_p99_ms": pct(real.submit_ms, 99),
                    "errors": real.errors,
                    "over_assigned": counts["over_assigned"],
                    "queries_per_request": round(sum(real.statements) / len(real.statements), 2)
                    if real.statements
                    else None,
                    "ceiling_cycles_per_s": round(ceiling_cycles, 1),
                    "ratio": round(cycles / ceiling_cycles, 3) if ceiling_cycles else None,
                    "next_p50_ms": pct(real.next_ms, 50),
                    "submit_p50_ms": pct(real.submit_ms, 50),
                    "max_queries_per_request": max(real.statements) if real.statements else None,
                    "ceiling_errors": ceiling.errors,
                    "ceiling_next_p99_ms": pct(ceiling.next_ms, 99),
                    "ceiling_submit_p99_ms": pct(ceiling.submit_ms, 99),
                    "client_cpu_pct": round(100 * cpu / r_secs, 1),
                    **cpu_figures("", real),
                    **cpu_figures("ceiling_", ceiling),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                    "workers": f"{workers}x{threads}",
                }
                print(json.dumps(line), flush=True)
                for sample in real.error_samples + ceiling.error_samples:
                    print(f"# error sample: {sample}", file=sys.stderr)
        finally:
            stop_server(server)
            if db == "postgresql":
                import psycopg

                with psycopg.connect(args.pg_url, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--db", default="sqlite,postgresql", help="sqlite, postgresql or both (comma-separated)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="time on the ceiling, and on the real loop, per shape"
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=2,
        help="interleave ceiling and real in this many slices each (C R R C ...); 1 = two plain phases. A cycle "
        "still in flight when its slice ends is not counted: about half a cycle per annotator and slice (<1 %% "
        "at the defaults)",
    )
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--annotators", type=int, default=64)
    parser.add_argument("--required", type=int, default=3, help="annotations each item needs")
    parser.add_argument(
        "--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    # SQLite: one process per core, 1 thread each. A writer holding SQLite's one write lock must not wait for
    # its own process's GIL (each SQLite call releases it, and a sibling thread takes it): with one thread per
    # process the server used the whole machine (3 % idle against ~25 % with 3 x 2). And every statement that
    # starts after another process's commit re-reads SQLite's emptied page cache, so fewer processes cost less.
    # 32 annotators, 2 cores (AMD EPYC), 2026-12-07, alternating: 2 x 1 0.639, 0.638, 0.605, 0.647, 0.648,
    # 0.662 x the ceiling; 3 x 1 0.605, 0.628; 4 x 1 0.563, 0.594, 0.579, 0.577; 6 x 1 0.596, 0.599; 2 x 2
    # 0.571. (2026-12-02, before next became one statement: 4 x 1 0.50-0.52; 3 x 2 0.41, 0.45; 8 x 1 0.46.)
    parser.add_argument("--sqlite-workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--sqlite-threads", type=int, default=1)
    parser.add_argument("--pg-workers", type=int, default=2)
    parser.add_argument("--pg-threads", type=int, default=4)
    parser.add_argument(
        "--shapes",
        default=",".join(f"{n}x{t}" for n, t in SHAPES),
        help="annotators x mean think ms, comma-separated (default 1x0,32x0,64x500)",
    )
    args = parser.parse_args()
    args.shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if max(n for n, _ in args.shapes) > args.annotators:
        parser.error("a shape needs more annotators than --annotators")
    print(f"# machine: {os.cpu_count()} cores, load average {os.getloadavg()}", file=sys.stderr)
    for db in args.db.split(","):
        bench_db(db.strip(), args)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
