"""The shared part of every recipe's configuration.

One dataclass per method (``DPORecipeConfig`` in ``dpo.py`` and so on) subclasses
:class:`RecipeConfig`; every field carries ``help`` metadata and is checked in ``__post_init__``,
which collects *all* problems and raises one :class:`ConfigError` naming each field.

Configs load from YAML (``RecipeConfig.from_yaml``), optionally with ``key=value`` overrides
(``--set`` on the command line), and serialise back with ``to_dict`` — the same dictionary is
stored in every checkpoint and in the final model card.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

SAVE_MODES = ("merged", "adapter")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)


class ConfigError(ValueError):
    """A recipe configuration is invalid. ``problems`` lists ``(field, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"invalid recipe config{where}:"] + [f"  - {name}: {msg}" for name, msg in problems]
        super().__init__("\n".join(lines))


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, list | dict):
        value = default
        return field(default_factory=lambda: json.loads(json.dumps(value)), metadata={"help": help})
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class RecipeConfig:
    """Fields every method shares. Subclasses add their own and extend :meth:`validate`."""

    METHOD: ClassVar[str] = ""
    #: Snapshot kinds (manifest ``kind``) this method can read.
    SNAPSHOT_KINDS: ClassVar[tuple[str, ...]] = ()
    #: Default learning rate when the YAML gives none (methods differ a lot).
    DEFAULT_LR: ClassVar[float] = 1e-4

    # --- where things are -------------------------------------------------------------------
    model_name_or_path: str = _field(
        "",
        "Starting model: a local Hugging Face folder (full weights, or a LoRA adapter folder whose "
        "adapter_config.json names its base; the adapter is merged before training). Required.",
    )
    snapshot_dir: str = _field(
        "",
        "Snapshot folder written by the exports helper: manifest.json + train.jsonl (+ test.jsonl). "
        "Recipes read only these files, never the database. Required.",
    )
    output_dir: str = _field(
        "",
        "Run folder: checkpoints/, metrics.jsonl, progress.json, eval.json, result.json and, only "
        "once complete, final/ (weights, tokenizer, model card). Required.",
    )

    # --- schedule ------------------------------------------------------------------------------
    seed: int = _field(0, "Random seed (data order, LoRA init, sampling).")
    num_train_epochs: float = _field(1.0, "Passes over the training split (ignored if max_steps > 0).")
    max_steps: int = _field(-1, "Stop after this many optimiser steps; -1 = use num_train_epochs.")
    per_device_train_batch_size: int = _field(4, "Training rows per device per step.")
    per_device_eval_batch_size: int = _field(8, "Rows per device per evaluation batch.")
    gradient_accumulation_steps: int = _field(1, "Micro-batches accumulated per optimiser step.")
    learning_rate: float | None = _field(
        None, "Peak learning rate; None = the method's default (see DEFAULT_LR in its module)."
    )
    lr_scheduler_type: str = _field("linear", f"Learning-rate schedule, one of {SCHEDULERS}.")
    warmup_ratio: float = _field(0.0, "Share of steps spent warming the learning rate up, in [0, 1).")
    weight_decay: float = _field(0.0, "AdamW weight decay.")
    max_grad_norm: float = _field(1.0, "Gradient clipping norm (0 disables).")
    max_length: int = _field(512, "Longest tokenised sequence (prompt + completion; block size for cpt).")

    # --- LoRA ----------------------------------------------------------------------------------
    use_lora: bool = _field(True, "Train a LoRA adapter (peft) instead of all weights.")
    lora_r: int = _field(16, "LoRA rank.")
    lora_alpha: int = _field(32, "LoRA scaling alpha.")
    lora_dropout: float = _field(0.05, "Dropout on the LoRA path, in [0, 1).")
    lora_target_modules: list[str] | str = _field(  # noqa: RUF009 (_field wraps dataclasses.field)
        "all-linear", "Modules to adapt: 'all-linear' or a list of module names."
    )
    save_mode: str = _field(
        "merged",
        "What final/ holds when use_lora: 'merged' (adapter folded into full weights, loadable "
        "anywhere) or 'adapter' (adapter only; adapter_config.json names the base).",
    )

    # --- checkpoints, logs ----------------------------------------------------------------------
    save_steps: int = _field(50, "Write a checkpoint (weights, optimiser, config, step) every N steps.")
    save_total_limit: int = _field(2, "Keep at most this many checkpoints (oldest deleted).")
    logging_steps: int = _field(1, "Append a metrics.jsonl line every N steps.")
    resume: bool = _field(
        True,
        "Continue from the newest complete checkpoint in output_dir/checkpoints if one exists "
        "(refused if it belongs to a different config).",
    )

    # --- hardware ------------------------------------------------------------------------------
    device: str = _field("auto", f"One of {DEVICES}: auto = CUDA when available, else CPU.")
    bf16: bool | None = _field(
        None,
        "bfloat16 mixed precision; None = on when CUDA supports it, off on a CPU. true on a CPU: "
        "autocast over float32 weights, refused where the CPU has no native bfloat16 (AVX512-BF16 or AMX).",
    )
    model_dtype: str = _field(
        "auto",
        f"Dtype weights are loaded in, one of {DTYPES}; auto = bfloat16 with bf16 on CUDA, else float32.",
    )
    gradient_checkpointing: bool = _field(
        False, "Recompute activations to save memory (slower; off for small models)."
    )
    torch_threads: int | None = _field(None, "torch.set_num_threads for CPU runs; None = leave.")

    # --- data ----------------------------------------------------------------------------------
    drop_truncated: bool | str = _field(
        True,
        "Rows whose candidate hit the token limit (columns 'truncated', 'chosen_truncated', "
        "'rejected_truncated', 'completion_truncated'): chat formatting would append an end-of-turn "
        "token and train a cut-off answer as finished. true = drop every such row; 'chosen' = drop "
        "only rows whose preferred answer was cut off (chosen, a thumbs-up or SFT completion) and "
        "keep cut-off rejected / thumbs-down answers as negatives (with long base answers most "
        "pairs are 'finished vs cut off'); false = keep all.",
    )
    max_train_rows: int | None = _field(None, "Use at most this many training rows (None = all).")
    final_eval: bool = _field(
        True,
        "Evaluate on the snapshot's test split after training (PPO: on eval_prompts of its prompts; "
        "metrics in the run's result and row); false skips it, for a caller that judges the model "
        "another way (the closed loop does, on held-out prompts).",
    )

    # -------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        if self.learning_rate is None:
            self.learning_rate = self.DEFAULT_LR
        problems: list[tuple[str, str]] = []
        self._check_types(problems)
        if not problems:  # range checks assume the types are right
            for f in dataclasses.fields(self):
                value = getattr(self, f.name)
                if f.name.endswith(("_path", "_dir")) and isinstance(value, str) and value.startswith("~"):
                    setattr(self, f.name, os.path.expanduser(value))
            self.validate(problems)
        if problems:
            raise ConfigError(problems)

    # Subclasses call super().validate(problems) and append their own.
    def validate(self, problems: list[tuple[str, str]]) -> None:
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                problems.append((name, msg))

        for name in ("model_name_or_path", "snapshot_dir", "output_dir"):
            need(bool(getattr(self, name)), name, "is required")
        need(self.num_train_epochs > 0, "num_train_epochs", "must be > 0")
        need(self.max_steps == -1 or self.max_steps > 0, "max_steps", "must be -1 or > 0")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "lora_r",
            "lora_alpha",
            "save_steps",
            "save_total_limit",
            "logging_steps",
        ):
            need(getattr(self, name) >= 1, name, "must be >= 1")
        assert self.learning_rate is not None
        need(0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)")
        need(self.lr_scheduler_type in SCHEDULERS, "lr_scheduler_type", f"must be one of {SCHEDULERS}")
        need(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        need(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        if isinstance(self.lora_target_modules, str):
            need(
                self.lora_target_modules == "all-linear",
                "lora_target_modules",
                "must be 'all-linear' or a list of module names",
            )
        else:
            need(
                bool(self.lora_target_modules)
                and all(isinstance(m, str) and m for m in self.lora_target_modules),
                "lora_target_modules",
                "must be a non-empty list of module names",
            )
        need(self.save_mode in SAVE_MODES, "save_mode", f"must be one of {SAVE_MODES}")
        need(self.device in DEVICES, "device", f"must be one of {DEVICES}")
        need(self.model_dtype in DTYPES, "model_dtype", f"must be one of {DTYPES}")
        if self.torch_threads is not None:
            need(self.torch_threads >= 1, "torch_threads", "must be >= 1")
        if isinstance(self.drop_truncated, str) and self.drop_truncated != "chosen":
            problems.append(("drop_truncated", "must be true, false or 'chosen'"))
        if self.max_train_rows is not None:
            need(self.max_train_rows >= 1, "max_train_rows", "must be >= 1")

    def _check_types(self, problems: list[tuple[str, str]]) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            ok, coerced = _conforms(value, hints[f.name])
            if ok:
                setattr(self, f.name, coerced)
            else:
                problems.append(
                    (f.name, f"expected {_type_name(hints[f.name])}, got {type(value).__name__} {value!r}")
                )

    # --- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"method": self.METHOD, **dataclasses.asdict(self)}

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None):
        data = dict(data)
        method = data.pop("method", cls.METHOD)
        if method != cls.METHOD:
            raise ConfigError([("method", f"this config is for {method!r}, not {cls.METHOD!r}")], source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                [
                    (name, f"unknown field for {cls.METHOD} (known: {', '.join(sorted(known))})")
                    for name in unknown
                ],
                source,
            )
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(exc.problems, source) from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None):
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([("config", f"cannot read {path}: {exc.strerror}")]) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError([("config", f"YAML syntax error at {where}: {exc}")]) from None
        if not isinstance(data, dict):
            raise ConfigError([("config", f"{path} must hold a mapping of field: value")])
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError([("--set", f"expected key=value, got {item!r}")])
            data[key.strip()] = yaml.safe_load(raw)
        return cls.from_dict(data, source=str(path))


#: A number that YAML 1.1 (PyYAML) leaves as a string: an exponent without a dot, like 1e-4.
YAML11_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _conforms(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against a simple annotation; ints and exponent strings are accepted (and
    converted) for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, coerced = _conforms(value, arg)
            if ok:
                return True, coerced
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is Any:
        return True, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (arg,) = typing.get_args(tp) or (Any,)
        out = []
        for v in value:
            ok, c = _conforms(v, arg)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if origin is dict:
        return isinstance(value, dict), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int | float):
            return True, float(value)
        if isinstance(value, str) and YAML11_NUMBER.fullmatch(value.strip()):
            return True, float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        return False, value
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


@dataclass
class ReferenceMixin:
    """For methods with a frozen reference policy (dpo, kto, ppo)."""

    ref_model_name_or_path: str | None = _field(
        None,
        "Reference policy for the KL term. Keep the ORIGINAL base here across closed-loop rounds "
        "(round 2 starts from round 1's weights but should stay anchored to the base). None = the "
        "starting model.",
    )


@dataclass
class PaddingFreeMixin:
    """For methods whose trainer pads each batch to its longest sequence (dpo, kto, orpo, reward)."""

    padding_free: bool = _field(
        True,
        "Pack each batch's sequences into as few rows of at most max_length tokens as fit (each with "
        "its own positions and a block-diagonal mask) instead of padding them all to the longest: "
        "the same logits, fewer token slots (training/recipes/packing.py).",
    )


@dataclass
class CompletionLogitsMixin:
    """For methods whose loss reads the logits of completion tokens only (dpo, kto)."""

    completion_logits_only: bool = _field(
        True,
        "Apply the LM head and the log-softmax at completion tokens only, where the loss and the "
        "metrics read them, instead of at every slot of the padded batch (the same loss, fewer bytes "
        "moved; training/recipes/completion_logits.py). Loss types it does not cover (DPO: other than "
        "sigmoid and sft; KTO: other than kto and apo_zero_unpaired) keep TRL's own code.",
    )


@dataclass
class CutOffPrefixMixin:
    """For methods that train answers as finished (dpo, kto): a cut-off answer's end-of-turn token."""

    cut_off_as_prefix: bool = _field(
        True,
        "Train a completion that hit the token limit (kept by drop_truncated: a thumbs-down or "
        "rejected answer, as a rule) as the unfinished prefix it is: without the end-of-turn token "
        "that chat formatting appends. Otherwise a thumbs-down on (or a preference against) a "
        "rambling, cut-off answer also pushes down ending it there, teaching the model not to stop "
        "after that much text.",
    )
