"""What every recipe run shares: its folder, progress and metrics files, checkpoints, resume, and
the all-or-nothing final artifact.

Run folder (``output_dir``)::

    config.yaml        the resolved config (all fields)
    progress.json      {status, step, total_steps, epoch, updated_at, pid}  -- polled by Django
    metrics.jsonl      one line per log: {step, epoch, time, loss, rewards/..., kl, ...}
    checkpoints/       checkpoint-N/ (weights, optimiser, scheduler, RNG, trainer_state.json,
                       arbiter_checkpoint.json = {method, step, config, fingerprint})
    eval.json          final evaluation on the snapshot's test split
    final/             weights (merged or adapter) + tokenizer + README.md (model card) +
                       arbiter.json; written to a temporary folder and renamed when complete
    result.json        written last: {status, final_dir, eval, steps, ...}

Only the main process (rank 0 under ``accelerate launch``) writes these files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, RecipeConfig
from .data import Snapshot, load_snapshot
from .modeling import load_dtype, use_bf16, use_cuda

logger = logging.getLogger(__name__)

CHECKPOINT_META = "arbiter_checkpoint.json"
FINAL = "final"


def cpu_bf16_autocast() -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on the CPU without autocast's weight cache. The cache keeps the bfloat16 copy of
    each trainable weight until the outermost autocast context exits; a recipe enters it around the whole
    of ``train()``, so every forward pass would read the weights as they were at the first step while the
    optimiser updated the float32 ones (until 2026-12-06: a bfloat16 reward model's training margins stayed
    at ~0.13 where float32's grew to 2.5, and PPO drew every rollout from its starting policy)."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def config_fingerprint(cfg: RecipeConfig, snapshot_hash: str) -> str:
    """What must match for a checkpoint to be resumed: method, model, data, and the trainer knobs."""
    data = cfg.to_dict()
    for volatile in (
        "resume",
        "output_dir",
        "torch_threads",
        "save_steps",
        "save_total_limit",
        "logging_steps",
    ):
        data.pop(volatile, None)
    data["snapshot_content_hash"] = snapshot_hash
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RecipeRun:
    """One run's folder and bookkeeping. Use as a context manager around the training code."""

    def __init__(self, cfg: RecipeConfig):
        self.cfg = cfg
        self.root = Path(cfg.output_dir)
        self.checkpoints = self.root / "checkpoints"
        self.metrics_path = self.root / "metrics.jsonl"
        self.progress_path = self.root / "progress.json"
        self.fingerprint = ""
        self.snapshot: Snapshot | None = None
        self.resume_from: str | None = None
        self.resume_step = 0
        self.started = time.time()
        self._progress: dict[str, Any] = {"status": "starting", "step": 0, "total_steps": None}
        self._lock: Any = None

    # --- context ------------------------------------------------------------------------------
    def __enter__(self) -> RecipeRun:
        import torch
        from transformers import set_seed

        from .modeling import adapter_base

        if (
            self.cfg.use_lora
            and self.cfg.save_mode == "adapter"
            and adapter_base(self.cfg.model_name_or_path)
        ):
            # The start is base + an earlier adapter, merged before training: a new adapter alone
            # would not apply to the plain base. Only merged output is self-contained.
            raise ConfigError(
                [
                    (
                        "save_mode",
                        "'adapter' needs a full starting model; this run starts from an adapter: use 'merged'",
                    )
                ]
            )
        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        set_seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        if is_main_process():
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = (self.root / ".lock").open("w")
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                raise RuntimeError(f"another process is training in {self.root}") from None
            self.checkpoints.mkdir(exist_ok=True)
            _atomic_write(self.root / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            for stale in ("result.json",):
                (self.root / stale).unlink(missing_ok=True)
        self.write_progress(status="starting")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.write_progress(status="failed", error=f"{exc_type.__name__}: {exc}"[:2000])
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    # --- progress / metrics -------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bfloat16 autocast for training and evaluation on a CPU run with ``bf16`` on (weights stay
        float32). accelerate casts only the prepared model's forward; TRL's PPO also generates and
        scores with unwrapped models, so each recipe enters this around its train and evaluate calls
        (not around merging, which should add the LoRA delta in float32)."""
        if use_bf16(self.cfg) and not use_cuda(self.cfg):
            return cpu_bf16_autocast()
        return contextlib.nullcontext()

    def train(self, trainer: Any, *, evaluate: bool, eval_autocast: bool = True) -> dict[str, Any]:
        """``trainer.train()`` under autocast, resumed from the checkpoint attach_snapshot picked; then, with
        ``evaluate`` (a test split to score) and the config's ``final_eval``, ``trainer.evaluate()``, under
        autocast unless ``eval_autocast`` is off. Returns the evaluation's metrics ({} without one)."""
        with self.autocast():
            trainer.train(resume_from_checkpoint=self.resume_from)
        self.write_progress(status="evaluating")
        if not (evaluate and self.cfg.final_eval):
            return {}
        with self.autocast() if eval_autocast else contextlib.nullcontext():
            return trainer.evaluate()

    def write_progress(self, **fields: Any) -> None:
        self._progress.update(fields)
        self._progress["updated_at"] = datetime.now(UTC).isoformat()
        self._progress["pid"] = os.getpid()
        if is_main_process():
            self.root.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.progress_path, json.dumps(self._progress))

    def log_metrics(self, step: int, logs: dict[str, Any], epoch: float | None = None) -> None:
        if not is_main_process():
            return
        line = {"step": step, "epoch": epoch, "time": round(time.time() - self.started, 3)}
        line.update({k: _jsonable(v) for k, v in logs.items()})
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def callback(self, step_offset: Callable[[], int] | None = None) -> Any:
        """A transformers TrainerCallback feeding metrics.jsonl, progress.json and checkpoint meta."""
        return _callback_class()(self, step_offset or (lambda: 0))

    # --- data + resume ------------------------------------------------------------------------
    def load_snapshot(
        self, *, keep_optional: tuple[str, ...] = (), drop_truncated: bool | str | None = None
    ) -> Snapshot:
        """The config's snapshot (its folder, the method's kinds, ``max_train_rows``, ``seed``; cut-off rows
        dropped by ``drop_truncated``, the config's unless given), attached to this run (attach_snapshot)."""
        cfg = self.cfg
        snapshot = load_snapshot(
            cfg.snapshot_dir,
            kinds=cfg.SNAPSHOT_KINDS,
            drop_truncated=cfg.drop_truncated if drop_truncated is None else drop_truncated,
            keep_optional=keep_optional,
            max_train_rows=cfg.max_train_rows,
            seed=cfg.seed,
        )
        self.attach_snapshot(snapshot)
        return snapshot

    def attach_snapshot(self, snapshot: Snapshot) -> None:
        """Record the data; pick the checkpoint to resume from (refusing a foreign one)."""
        self.snapshot = snapshot
        self.fingerprint = config_fingerprint(self.cfg, snapshot.content_hash)
        if not self.cfg.resume:
            if is_main_process() and self.checkpoints.exists():
                shutil.rmtree(self.checkpoints)
                self.checkpoints.mkdir()
                self.metrics_path.unlink(missing_ok=True)
            return
        ckpt = latest_checkpoint(self.checkpoints)
        if ckpt is None:
            if is_main_process():
                self.metrics_path.unlink(missing_ok=True)
            return
        meta = json.loads((ckpt / CHECKPOINT_META).read_text())
        if meta.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                [
                    (
                        "resume",
                        f"{ckpt} was written by a different config or snapshot (fingerprint "
                        f"{meta.get('fingerprint')} != {self.fingerprint}); use a fresh output_dir or "
                        "set resume: false to start over",
                    )
                ]
            )
        self.resume_from = str(ckpt)
        self.resume_step = int(meta["step"])
        self._truncate_metrics(self.resume_step)
        logger.info("resuming from %s (step %s)", ckpt, self.resume_step)

    def _truncate_metrics(self, step: int) -> None:
        if not is_main_process() or not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a kill
        _atomic_write(self.metrics_path, "".join(k + "\n" for k in kept))

    def write_checkpoint_meta(self, folder: Path, step: int) -> None:
        if not is_main_process() or not folder.is_dir():
            return
        meta = {
            "method": self.cfg.METHOD,
            "step": step,
            "fingerprint": self.fingerprint,
            "snapshot": self.snapshot.describe() if self.snapshot else None,
            "config": self.cfg.to_dict(),
            "saved_at": datetime.now(UTC).isoformat(),
        }
        _atomic_write(folder / CHECKPOINT_META, json.dumps(meta, indent=1))

    # --- TRL/transformers arguments -----------------------------------------------------------
    def trainer_kwargs(self) -> dict[str, Any]:
        cfg = self.cfg
        cuda = use_cuda(cfg)
        kwargs: dict[str, Any] = {
            "output_dir": str(self.checkpoints),
            "seed": cfg.seed,
            "num_train_epochs": cfg.num_train_epochs,
            "max_steps": cfg.max_steps,
            "per_device_train_batch_size": cfg.per_device_train_batch_size,
            "per_device_eval_batch_size": cfg.per_device_eval_batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "learning_rate": cfg.learning_rate,
            "lr_scheduler_type": cfg.lr_scheduler_type,
            "warmup_steps": cfg.warmup_ratio,
            "weight_decay": cfg.weight_decay,
            "max_grad_norm": cfg.max_grad_norm,
            "logging_steps": cfg.logging_steps,
            "save_strategy": "steps",
            "save_steps": cfg.save_steps,
            "save_total_limit": cfg.save_total_limit,
            "eval_strategy": "no",
            "report_to": [],
            "use_cpu": not cuda,
            "bf16": use_bf16(cfg),
            "fp16": False,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "dataloader_num_workers": 0,
            "disable_tqdm": False,
        }
        return kwargs

    def model_init_dtype(self):
        return load_dtype(self.cfg)

    # --- the final artifact -------------------------------------------------------------------
    def finish(
        self,
        *,
        trainer,
        tokenizer,
        eval_metrics: dict[str, Any],
        merge_loader: Callable[[], Any] | None,
        extra: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> dict[str, Any]:
        """Write final/ atomically (temp folder, then rename), then eval.json and result.json."""
        cfg = self.cfg
        step = step if step is not None else int(trainer.state.global_step)
        self.write_progress(status="saving", step=step)
        tmp = self.root / f".final-tmp-{os.getpid()}"
        adapter_tmp = self.root / f".adapter-tmp-{os.getpid()}"
        if is_main_process():
            for p in (tmp, adapter_tmp):
                if p.exists():
                    shutil.rmtree(p)
        eval_metrics = {k: _jsonable(v) for k, v in eval_metrics.items()}
        lora = cfg.use_lora
        # Every process joins save_model (DeepSpeed/FSDP gather there); only rank 0 writes.
        trainer.save_model(str(adapter_tmp if lora and cfg.save_mode == "merged" else tmp))
        trainer.accelerator.wait_for_everyone()
        result: dict[str, Any] = {}
        if is_main_process():
            if lora and cfg.save_mode == "merged":
                assert merge_loader is not None
                from peft import PeftModel

                base = merge_loader()
                merged = PeftModel.from_pretrained(base, str(adapter_tmp)).merge_and_unload()
                merged.save_pretrained(str(tmp))
                shutil.rmtree(adapter_tmp)
            if lora and cfg.save_mode == "adapter":
                self._point_adapter_at_base(tmp)
            tokenizer.save_pretrained(str(tmp))
            card = self._card(eval_metrics, step, extra or {})
            (tmp / "arbiter.json").write_text(json.dumps(card, indent=1))
            (tmp / "README.md").write_text(render_model_card(card))
            final = self.root / FINAL
            old = self.root / f".final-old-{os.getpid()}"
            if final.exists():
                final.rename(old)
            tmp.rename(final)  # the one step that makes the artifact visible
            if old.exists():
                shutil.rmtree(old)
            _atomic_write(self.root / "eval.json", json.dumps(eval_metrics, indent=1))
            result = {
                "status": "succeeded",
                "method": cfg.METHOD,
                "final_dir": str(final.resolve()),
                "save_mode": cfg.save_mode if lora else "full",
                "steps": step,
                "eval": eval_metrics,
                "snapshot": card["snapshot"],
                "seconds": round(time.time() - self.started, 3),
                "resumed_from_step": self.resume_step,
                **(extra or {}),
            }
            _atomic_write(self.root / "result.json", json.dumps(result, indent=1))
        trainer.accelerator.wait_for_everyone()
        self.write_progress(status="succeeded", step=step)
        return result

    def _point_adapter_at_base(self, folder: Path) -> None:
        """Adapter configs must name an absolute local base so any process can load them."""
        cfg_file = folder / "adapter_config.json"
        data = json.loads(cfg_file.read_text())
        src = Path(self.cfg.model_name_or_path)
        data["base_model_name_or_path"] = str(src.resolve())
        cfg_file.write_text(json.dumps(data, indent=2))

    def _card(self, eval_metrics: dict[str, Any], step: int, extra: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "method": cfg.METHOD,
            "base_model": str(Path(cfg.model_name_or_path).resolve()),
            "reference_model": getattr(cfg, "ref_model_name_or_path", None),
            "snapshot": self.snapshot.describe() if self.snapshot else None,
            "save_mode": cfg.save_mode if cfg.use_lora else "full",
            "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "target_modules": cfg.lora_target_modules}
            if cfg.use_lora
            else None,
            "steps": step,
            "eval": eval_metrics,
            "config": cfg.to_dict(),
            "created_at": datetime.now(UTC).isoformat(),
            **extra,
        }


def render_model_card(card: dict[str, Any]) -> str:
    snap = card.get("snapshot") or {}
    lines = [
        "---",
        "library_name: transformers",
        "tags: [arbiter, trl, " + card["method"] + "]",
        "---",
        f"# {card['method'].upper()} model trained by Arbiter",
        "",
        f"- **Method:** {card['method']}",
        f"- **Base model:** `{card['base_model']}`",
    ]
    if card.get("reference_model"):
        lines.append(f"- **Reference model:** `{card['reference_model']}`")
    lines += [
        f"- **Snapshot:** `{snap.get('snapshot_id', '')}` (kind {snap.get('kind', '')}, "
        f"content hash `{snap.get('content_hash', '')}`)",
        f"- **Rows used:** {snap.get('rows_used', {})}; dropped as truncated: {snap.get('dropped_truncated', {})}",
        f"- **Filters:** `{json.dumps(snap.get('filters', {}))}`",
        f"- **Weights:** {card['save_mode']}" + (f", LoRA {card['lora']}" if card.get("lora") else ""),
        f"- **Optimiser steps:** {card['steps']}",
        f"- **Created:** {card['created_at']}",
        "",
        "## Evaluation on the snapshot's test split",
        "",
    ]
    if card["eval"]:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(card["eval"].items())]
    else:
        lines.append("No test split.")
    lines += [
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(card["config"], sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def latest_checkpoint(folder: Path) -> Path | None:
    """Newest checkpoint whose save completed (it holds our meta file and trainer_state.json)."""
    if not folder.is_dir():
        return None
    found = []
    for p in folder.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-"):
            try:
                n = int(p.name.split("-", 1)[1])
            except ValueError:
                continue
            if (p / CHECKPOINT_META).exists() and (p / "trainer_state.json").exists():
                found.append((n, p))
    return max(found)[1] if found else None


def _callback_class() -> type:
    from transformers import TrainerCallback

    class _RunCallback(TrainerCallback):
        """metrics.jsonl, progress.json and checkpoint metadata from the trainer's events."""

        def __init__(self, run: RecipeRun, step_offset: Callable[[], int]):
            self.run = run
            self.offset = step_offset

        def on_train_begin(self, args, state, control, **kwargs):
            self.run.write_progress(
                status="running",
                step=state.global_step + self.offset(),
                total_steps=state.max_steps + self.offset(),
            )

        def on_step_end(self, args, state, control, **kwargs):
            self.run.write_progress(
                status="running",
                step=state.global_step + self.offset(),
                total_steps=state.max_steps + self.offset(),
                epoch=state.epoch,
            )

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                self.run.log_metrics(state.global_step + self.offset(), logs, state.epoch)

        def on_save(self, args, state, control, **kwargs):
            step = state.global_step + self.offset()
            self.run.write_checkpoint_meta(Path(args.output_dir) / f"checkpoint-{step}", step)

    return _RunCallback
