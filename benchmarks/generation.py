"""Generation: the app's job against the bare engine, on the same prompts, in one run.

    .venv/bin/python benchmarks/generation.py [--prompts 48] [--max-new-tokens 48] [--engines transformers,openai]

For each engine, two runs of the same work (greedy, n=1, so both sides generate the same tokens):

- bare: a fresh Python process that loads the engine and generates every prompt (what a user
  would script by hand), timed from its start to its exit;
- app: a generation job, as the Celery task runs it (claim, then the job: a worker process per
  version, chunked, each chunk stored with its candidates and items), timed from the job's
  creation to its end.

One JSON line per engine: ``engine``, ``app_tokens_per_s``, ``bare_tokens_per_s``,
``overhead`` (app time / bare time − 1; target ≤ 0.05), with the times and token counts.
``transformers`` runs the demo model here; ``openai`` runs the client against our own server
(``python -m inference.engines.server``, started once and shared by both sides); ``vllm`` runs
where vLLM and a GPU are (else its line says why it was skipped). ``--vllm-vs-transformers``
adds a line with vLLM's tokens/s against the transformers engine's on the GPU (target ≥ 10×).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BARE_SCRIPT = """
import json, sys, time
start = time.perf_counter()
from inference.engines import load_generator
from inference.engines.base import SamplingParams
spec = json.loads(sys.stdin.read())
generator = load_generator(spec["engine"], model=spec["model"], **spec["settings"])
began = time.perf_counter()
outputs = generator.generate(spec["prompts"], n=spec["n"], params=SamplingParams.from_dict(spec["params"]))
generate_seconds = time.perf_counter() - began
generator.close()
tokens = sum(g.completion_tokens for samples in outputs for g in samples)
print(json.dumps({"tokens": tokens, "candidates": sum(len(s) for s in outputs),
                  "generate_seconds": generate_seconds,
                  "seconds_in_process": time.perf_counter() - start}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_django(data_dir: Path) -> None:
    os.environ["ARBITER_DATA_DIR"] = str(data_dir)
    os.environ["DATABASE_URL"] = f"sqlite:///{data_dir / 'bench.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def load_prompts(count: int) -> list[list[dict[str, str]]]:
    lines = (ROOT / "feedback" / "demo" / "prompts.jsonl").read_text().splitlines()
    prompts = [[{"role": "user", "content": json.loads(line)["prompt"]}] for line in lines if line.strip()]
    while len(prompts) < count:  # repeat with a suffix: distinct prompts, same flavour
        prompts += [[{"role": "user", "content": p[0]["content"] + f" ({len(prompts)})"}] for p in prompts]
    return prompts[:count]


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_bare(engine: str, model: str, settings: dict, prompts, n: int, params: dict) -> dict:
    spec = {
        "engine": engine,
        "model": model,
        "settings": settings,
        "prompts": prompts,
        "n": n,
        "params": params,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cpu0 = cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BARE_SCRIPT],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"bare {engine} run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = seconds
    result["cpu_seconds"] = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    return result


def run_app(version_kwargs: dict, prompts, n: int, params: dict, tag: str) -> dict:
    from feedback.models import Candidate, Prompt
    from feedback.services.projects import project_create
    from inference import services
    from inference.engines.base import SamplingParams
    from inference.models import JobStatus

    project = project_create(name=f"bench {tag} {time.time_ns()}", task_kind="binary", responses_per_item=1)
    for i, messages in enumerate(prompts):
        Prompt.objects.create(
            project=project, messages=messages, text=messages[0]["content"], content_hash=f"{i}"
        )
    version = services.model_version_register(name=f"bench-{tag}-{time.time_ns()}", **version_kwargs)
    cpu0 = cpu_seconds(resource.RUSAGE_SELF) + cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    job = services.generation_job_create(
        project=project,
        model_versions=[version],
        n=n,
        sampling_params=SamplingParams.from_dict(params),
        enqueue=False,
    )
    assert services.generation_job_claim(job_id=job.pk)
    job = services.generation_job_execute(job_id=job.pk)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(resource.RUSAGE_SELF) + cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    if job.status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"app {tag} job {job.status}: {job.error}")
    candidates = Candidate.objects.filter(generation_job=job)
    tokens = sum(c.completion_tokens or 0 for c in candidates)
    return {"tokens": tokens, "candidates": candidates.count(), "seconds": seconds, "cpu_seconds": cpu}


def compare(engine: str, bare_run, app_run, repeat: int) -> dict:
    """Alternate bare and app runs (the machine may be shared); keep each side's fastest."""
    bares, apps = [], []
    for i in range(repeat):
        if i % 2 == 0:
            bares.append(bare_run())
            apps.append(app_run())
        else:
            apps.append(app_run())
            bares.append(bare_run())
    bare = min(bares, key=lambda r: r["seconds"])
    app = min(apps, key=lambda r: r["seconds"])
    bare_cpu = min(r["cpu_seconds"] for r in bares)
    app_cpu = min(r["cpu_seconds"] for r in apps)
    return {
        "engine": engine,
        "app_tokens_per_s": round(app["tokens"] / app["seconds"], 2),
        "bare_tokens_per_s": round(bare["tokens"] / bare["seconds"], 2),
        "overhead": round(app["seconds"] / bare["seconds"] - 1, 4),
        "app_seconds": round(app["seconds"], 2),
        "bare_seconds": round(bare["seconds"], 2),
        "app_tokens": app["tokens"],
        "bare_tokens": bare["tokens"],
        "app_cpu_seconds": round(app_cpu, 2),
        "bare_cpu_seconds": round(bare_cpu, 2),
        "cpu_overhead": round(app_cpu / bare_cpu - 1, 4) if bare_cpu else None,
        "runs": repeat,
        "all_app_seconds": [round(r["seconds"], 2) for r in apps],
        "all_bare_seconds": [round(r["seconds"], 2) for r in bares],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--engines", default="transformers,openai,vllm")
    parser.add_argument("--model", default=None, help="HF folder (default: the demo model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="runs per side, alternating")
    parser.add_argument("--vllm-vs-transformers", action="store_true")
    args = parser.parse_args()

    from inference.engines.demo_model import ensure_demo_model
    from inference.engines.vllm_engine import vllm_unavailable_reason

    model = args.model or str(ensure_demo_model())
    prompts = load_prompts(args.prompts)
    params = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": 0.0,
        "top_p": 1.0,
        "stop": [],
        "seed": None,
    }
    n = 1
    data_dir = Path(tempfile.mkdtemp(prefix="arbiter-bench-"))
    setup_django(data_dir)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    local = {"device": args.device, "batch_size": args.batch_size}

    if "transformers" in engines:
        version = {"base_model": model, "engine": "transformers", "engine_settings": local}
        result = compare(
            "transformers",
            lambda: run_bare("transformers", model, local, prompts, n, params),
            lambda: run_app(version, prompts, n, params, "tf"),
            args.repeat,
        )
        print(json.dumps(result), flush=True)

    if "openai" in engines:
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inference.engines.server",
                "--model",
                model,
                "--name",
                "served",
                "--port",
                str(port),
                "--device",
                args.device,
                "--batch-size",
                str(args.batch_size),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import httpx

            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            remote = {"base_url": url, "concurrency": 16, "timeout": 3600}
            version = {"base_model": "served", "engine": "openai", "engine_settings": remote}
            result = compare(
                "openai",
                lambda: run_bare("openai", "served", remote, prompts, n, params),
                lambda: run_app(version, prompts, n, params, "oa"),
                args.repeat,
            )
            print(json.dumps(result), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)

    reason = vllm_unavailable_reason()
    if "vllm" in engines:
        if reason:
            print(json.dumps({"engine": "vllm", "skipped": reason}), flush=True)
        else:
            settings = {"gpu_memory_utilization": 0.8}
            version = {"base_model": model, "engine": "vllm", "engine_settings": settings}
            result = compare(
                "vllm",
                lambda: run_bare("vllm", model, settings, prompts, n, params),
                lambda: run_app(version, prompts, n, params, "vl"),
                args.repeat,
            )
            print(json.dumps(result), flush=True)

    if args.vllm_vs_transformers:
        if reason:
            print(json.dumps({"engine": "vllm_vs_transformers", "skipped": reason}), flush=True)
        else:
            gpu = {"device": "cuda", "batch_size": args.batch_size}
            tf = run_bare("transformers", model, gpu, prompts, n, params)
            vl = run_bare("vllm", model, {"gpu_memory_utilization": 0.8}, prompts, n, params)
            # generation time only: vLLM's start-up (CUDA graphs, KV cache) is paid once per server
            vl_tps = vl["tokens"] / vl["generate_seconds"]
            tf_tps = tf["tokens"] / tf["generate_seconds"]
            print(
                json.dumps(
                    {
                        "engine": "vllm_vs_transformers",
                        "vllm_tokens_per_s": round(vl_tps, 2),
                        "transformers_tokens_per_s": round(tf_tps, 2),
                        "ratio": round(vl_tps / tf_tps, 2),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
