"""Training: the app's run against the same TRL trainer called directly, on the same data, in one run.

    .venv/bin/python benchmarks/training.py [--methods dpo,kto,...] [--steps 40] [--hidden 128] [--layers 4]

For each method, two runs of the same work on the same snapshot files and the same tiny random
model (no hub, no download):

- direct: a fresh Python process that calls the TRL trainer by hand (model, tokenizer, LoRA,
  trainer config with the same hyper-parameters and checkpoint cadence, train, evaluate, save
  the adapter, merge it), timed from its start to its exit;
- app: a TrainingRun, as the Celery task runs it (claim, then the recipe in a child process with
  progress and log tail streamed into the row, the final folder renamed into place and a model
  version registered), timed from the run's creation to its end.

One JSON line per method: ``method``, ``app_s``, ``direct_s``, ``overhead`` (app / direct − 1;
target ≤ 0.05), plus ``steps`` and the CPU seconds of each side (``app_cpu_s``: the recipe
process and the app's own work — claim, polling, progress into the row, registration;
``direct_cpu_s``: the script) with ``cpu_overhead``, which a machine shared with other work
disturbs far less than wall time. PPO's direct side uses the reward model the app's reward run
produced. Each side runs ``--repeats`` times; the fastest of each is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HP = {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "learning_rate": 1e-3, "max_length": 128,
      "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "save_steps": 20, "logging_steps": 1, "seed": 0}  # fmt: skip
KIND = {"reward": "preference", "ppo": "preference", "dpo": "preference", "orpo": "preference", "kto": "unpaired",
        "sft": "sft", "cpt": "documents"}  # fmt: skip

DIRECT = r"""
import json, sys, time, random
start = time.perf_counter()
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
method, model_dir, data, out, steps, hp, rm_dir, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), json.loads(sys.argv[6]), sys.argv[7], int(sys.argv[8])
torch.set_num_threads(threads)
def rows(split):
    try:
        return [json.loads(l) for l in open(f"{data}/{split}.jsonl")]
    except FileNotFoundError:
        return []
train, test = rows("train"), rows("test")
tok = AutoTokenizer.from_pretrained(model_dir)
seq = method == "reward"
Auto = AutoModelForSequenceClassification if seq else AutoModelForCausalLM
kw = {"num_labels": 1} if seq else {}
model = Auto.from_pretrained(model_dir, dtype=torch.float32, **kw)
model.config.pad_token_id = tok.pad_token_id
lora = LoraConfig(r=hp["lora_r"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"], target_modules="all-linear", task_type="SEQ_CLS" if seq else "CAUSAL_LM")
common = dict(output_dir=f"{out}/checkpoints", max_steps=steps, per_device_train_batch_size=hp["per_device_train_batch_size"],
              per_device_eval_batch_size=hp["per_device_eval_batch_size"], learning_rate=hp["learning_rate"], logging_steps=1,
              save_strategy="steps", save_steps=hp["save_steps"], save_total_limit=2, report_to=[], use_cpu=True, bf16=False,
              gradient_checkpointing=False, seed=hp["seed"], eval_strategy="no", dataloader_num_workers=0)
ev = Dataset.from_list(test) if test else None
if method == "dpo":
    from trl import DPOConfig, DPOTrainer
    t = DPOTrainer(model=model, args=DPOConfig(**common, beta=0.1, max_length=hp["max_length"]), train_dataset=Dataset.from_list(train), eval_dataset=ev, processing_class=tok, peft_config=lora)
elif method == "kto":
    from trl import KTOConfig, KTOTrainer
    random.Random(hp["seed"]).shuffle(train)
    t = KTOTrainer(model=model, args=KTOConfig(**common, beta=0.1, max_length=hp["max_length"]), train_dataset=Dataset.from_list(train), eval_dataset=ev, processing_class=tok, peft_config=lora)
elif method == "orpo":
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    t = ORPOTrainer(model=model, args=ORPOConfig(**common, beta=0.1, max_length=hp["max_length"], remove_unused_columns=False), train_dataset=Dataset.from_list(train), eval_dataset=ev, processing_class=tok, peft_config=lora)
elif method == "sft":
    from trl import SFTConfig, SFTTrainer
    t = SFTTrainer(model=model, args=SFTConfig(**common, max_length=hp["max_length"], completion_only_loss=True), train_dataset=Dataset.from_list(train), eval_dataset=ev, processing_class=tok, peft_config=lora)
elif method == "reward":
    from trl import RewardConfig, RewardTrainer
    t = RewardTrainer(model=model, args=RewardConfig(**common, max_length=hp["max_length"], center_rewards_coefficient=0.01), train_dataset=Dataset.from_list(train), eval_dataset=ev, processing_class=tok, peft_config=lora)
elif method == "cpt":
    from trl import SFTConfig, SFTTrainer
    docs = [l.strip() for l in open(f"{data}/corpus.txt") if l.strip()]
    stream = []
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = hp["max_length"]
    blocks = [stream[i:i+n] for i in range(0, len(stream) - n + 1, n)]
    cut = max(1, len(blocks) // 10)
    t = SFTTrainer(model=model, args=SFTConfig(**common, max_length=n, packing=False), train_dataset=Dataset.from_list([{"input_ids": b} for b in blocks[cut:]]), eval_dataset=Dataset.from_list([{"input_ids": b} for b in blocks[:cut]]), processing_class=tok, peft_config=lora)
elif method == "ppo":
    from transformers import DataCollatorWithPadding
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    tok.padding_side = "left"
    enc = lambda rs: [{"input_ids": tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)} for r in rs]
    seen, prompts = set(), []
    for r in train:
        k = json.dumps(r["prompt"])
        if k not in seen:
            seen.add(k); prompts.append(r)
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1); rm.config.pad_token_id = tok.pad_token_id
    vm = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1); vm.config.pad_token_id = tok.pad_token_id
    c = dict(common); c["max_steps"] = -1
    args = PPOConfig(**c, total_episodes=steps * hp["per_device_train_batch_size"], response_length=16, stop_token="eos", num_ppo_epochs=1, num_sample_generations=0, kl_coef=0.05, missing_eos_penalty=1.0, temperature=0.7)
    t = PPOTrainer(args=args, processing_class=tok, model=model, ref_model=None, reward_model=rm, value_model=vm, train_dataset=Dataset.from_list(enc(prompts)), eval_dataset=Dataset.from_list(enc(prompts[:8])), data_collator=DataCollatorWithPadding(tok), peft_config=lora)
t.train()
if method != "ppo" and ev is not None or method == "cpt":
    t.evaluate()
t.save_model(f"{out}/adapter")
base = Auto.from_pretrained(model_dir, dtype=torch.float32, **kw)
PeftModel.from_pretrained(base, f"{out}/adapter").merge_and_unload().save_pretrained(f"{out}/final")
tok.save_pretrained(f"{out}/final")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def setup_django(data_dir: Path) -> None:
    os.environ["ARBITER_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["DATABASE_URL"] = f"sqlite:///{data_dir / 'bench.sqlite3'}"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def write_data(root: Path, kind: str, n_train: int, n_test: int) -> Path:
    import random

    rng = random.Random(0)
    words = "the quick brown fox jumps over lazy dog python django answer short long because clear".split()

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    folder = root / f"snap-{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "documents":
        (folder / "corpus.txt").write_text("".join(f"Document {i}. {text(60)}\n" for i in range(n_train)))
        return folder

    def row(i: int) -> dict:
        prompt = [{"role": "user", "content": f"Question {i}: {text(6)}?"}]
        short, long = (
            [{"role": "assistant", "content": text(4)}],
            [{"role": "assistant", "content": text(24)}],
        )
        if kind == "preference":
            return {"prompt": prompt, "chosen": short, "rejected": long}
        if kind == "unpaired":
            return {"prompt": prompt, "completion": short if i % 2 else long, "label": bool(i % 2)}
        return {"prompt": prompt, "completion": short}

    splits = {"train": [row(i) for i in range(n_train)], "test": [row(10_000 + i) for i in range(n_test)]}
    for name, rows in splits.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {"snapshot_id": f"bench-{kind}", "kind": kind, "content_hash": f"bench-{kind}",
                "row_counts": {k: len(v) for k, v in splits.items()}, "filters": {}}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_direct(
    method: str, model: Path, data: Path, out: Path, steps: int, rm_dir: str, threads: int
) -> tuple[float, float]:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    cpu0 = _cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", DIRECT, method, str(model), str(data), str(out), str(steps), json.dumps(HP), rm_dir, str(threads)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"direct {method} failed:\n{done.stderr[-3000:]}")
    return seconds, _cpu(resource.RUSAGE_CHILDREN) - cpu0


def run_app(method: str, version, data: Path, steps: int, reward_run=None):
    from django.conf import settings

    from feedback.models import DatasetSnapshot
    from training import services
    from training.recipes import recipe
    from training.recipes.config import PaddingFreeMixin

    settings.TRAINING_TORCH_THREADS = THREADS
    config = {k: v for k, v in HP.items()} | {"max_steps": steps, "device": "cpu", "save_total_limit": 2}
    if method == "ppo":
        config |= {"response_length": 16, "num_ppo_epochs": 1, "eval_prompts": 0}
    if method == "kto":
        config |= {"balance_weights": False}
    if issubclass(recipe(method).Config, PaddingFreeMixin):
        config |= {"padding_free": False}  # the direct side pads, as TRL 1.12 does: the same work
    snapshot = None
    if method != "cpt":
        manifest = json.loads((data / "manifest.json").read_text())
        snapshot = DatasetSnapshot.objects.create(
            name=f"bench {method}", kind=manifest["kind"], status="written", content_hash=manifest["content_hash"],
            path=str(data), row_counts=manifest["row_counts"],
        )  # fmt: skip
    cpu0 = _cpu(resource.RUSAGE_CHILDREN) + _cpu(resource.RUSAGE_SELF)
    start = time.perf_counter()
    run = services.training_run_create(
        method=method, snapshot=snapshot, parent_version=version, config=config, reward_run=reward_run,
        documents_dir=data if method == "cpt" else None, enqueue=False,
    )  # fmt: skip
    if not services.training_run_claim(run_id=run.pk):
        raise RuntimeError(f"could not claim run {run.pk}")
    run = services.training_run_execute(run_id=run.pk)
    seconds = time.perf_counter() - start
    cpu = _cpu(resource.RUSAGE_CHILDREN) + _cpu(resource.RUSAGE_SELF) - cpu0
    if run.status != "succeeded":
        raise RuntimeError(f"app {method} run {run.pk} {run.status}: {run.error}\n{run.log_tail[-3000:]}")
    return seconds, cpu, run


THREADS = 1


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="reward,ppo,dpo,kto,orpo,sft,cpt")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--train-rows", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    THREADS = args.threads
    methods = args.methods.split(",")
    if "ppo" in methods and "reward" not in methods:
        methods.insert(methods.index("ppo"), "reward")
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-training-") as tmp:
        root = Path(tmp)
        setup_django(root / "data")
        from django.conf import settings

        from inference.engines.tiny import build_tiny_model
        from inference.models import ModelVersion

        settings.RUNS_DIR = root / "runs"
        settings.TRAINING_POLL_S = 2.0
        model_dir = root / "base"
        build_tiny_model(model_dir, hidden_size=args.hidden, layers=args.layers, vocab_size=512)
        version = ModelVersion.objects.create(name="bench-base", base_model=str(model_dir))
        reward_run = None
        for method in methods:
            data = write_data(
                root / "data-files", KIND[method], args.train_rows, max(8, args.train_rows // 10)
            )
            app_times, direct_times, app_cpu, direct_cpu = [], [], [], []
            for rep in range(args.repeats):
                # Alternate the order so drift in the machine's load hits both sides alike.
                order = ("direct", "app") if rep % 2 == 0 else ("app", "direct")
                for side in order:
                    if side == "app":
                        s, cpu, run = run_app(
                            method, version, data, args.steps, reward_run if method == "ppo" else None
                        )
                        app_times.append(s)
                        app_cpu.append(cpu)
                        if method == "reward":
                            reward_run = run
                    else:
                        rm_dir = (
                            str(Path(reward_run.output_dir) / "final")
                            if method == "ppo" and reward_run
                            else ""
                        )
                        out = root / f"direct-{method}-{rep}"
                        s, cpu = run_direct(method, model_dir, data, out, args.steps, rm_dir, args.threads)
                        direct_times.append(s)
                        direct_cpu.append(cpu)
            app_s, direct_s = min(app_times), min(direct_times)
            app_c, direct_c = min(app_cpu), min(direct_cpu)
            print(json.dumps({"method": method, "app_s": round(app_s, 2), "direct_s": round(direct_s, 2),
                              "overhead": round(app_s / direct_s - 1, 4), "app_cpu_s": round(app_c, 2),
                              "direct_cpu_s": round(direct_c, 2), "cpu_overhead": round(app_c / direct_c - 1, 4),
                              "steps": args.steps, "repeats": args.repeats}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
