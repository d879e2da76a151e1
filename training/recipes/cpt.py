"""Continued pretraining on domain documents an admin uploads (plain text, markdown or JSONL) —
the first step of base -> CPT -> SFT -> preference alignment.

``snapshot_dir`` is a file or folder of documents: ``.txt`` / ``.md`` files are one document each,
``.jsonl`` files one document per line (``text_field``). A folder with a ``manifest.json`` of kind
``documents`` and ``train.jsonl`` / ``test.jsonl`` is read split as given; otherwise a seeded
``eval_fraction`` of the documents is held out. Documents are cleaned (whitespace), deduplicated
(normalised text), PII-screened like prompts are on import (``feedback.pii``: redacted by default),
tokenised with EOS between documents and packed into ``max_length``-token blocks.

Launch::

    python -m training.recipes.cpt --config training/configs/cpt.yaml
    accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml \
        -m training.recipes.cpt --config training/configs/cpt.yaml

Final evaluation: language-model loss and perplexity on the held-out blocks.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .config import RecipeConfig, _field
from .data import (
    DocumentReport,
    Snapshot,
    SnapshotError,
    clean_documents,
    pack_documents,
    read_documents,
    read_manifest,
)
from .modeling import ensure_distinct_pad, load_causal_lm, load_tokenizer, lora_config
from .runtime import RecipeRun

PII_MODES = ("redact", "drop", "keep")


@dataclass
class Config(RecipeConfig):
    METHOD: ClassVar[str] = "cpt"
    SNAPSHOT_KINDS: ClassVar[tuple[str, ...]] = ("documents",)
    DEFAULT_LR: ClassVar[float] = 1e-4

    text_field: str = _field("text", "Field holding the document text in .jsonl files.")
    min_chars: int = _field(20, "Drop documents shorter than this after cleaning.")
    pii: str = _field(
        "redact", f"PII in documents, one of {PII_MODES}: placeholders, drop the document, or keep."
    )
    eval_fraction: float = _field(
        0.1, "Share of documents held out for evaluation when the folder has no test split, in [0, 0.5]."
    )

    def validate(self, problems: list[tuple[str, str]]) -> None:
        super().validate(problems)
        if self.pii not in PII_MODES:
            problems.append(("pii", f"must be one of {PII_MODES}"))
        if self.min_chars < 0:
            problems.append(("min_chars", "must be >= 0"))
        if not 0 <= self.eval_fraction <= 0.5:
            problems.append(("eval_fraction", "must be in [0, 0.5]"))
        if self.max_length < 8:
            problems.append(("max_length", "block size must be >= 8 tokens"))


def load_documents(cfg: Config) -> tuple[dict[str, Any], list[str], list[str], DocumentReport]:
    root = Path(cfg.snapshot_dir)
    report = DocumentReport()
    manifest: dict[str, Any] | None = None
    if root.is_dir() and (root / "manifest.json").exists():
        manifest = read_manifest(root)
        if manifest["kind"] != "documents":
            raise SnapshotError(f"{root}/manifest.json: kind {manifest['kind']!r} is not 'documents'")
    if manifest is not None and (root / "train.jsonl").exists():
        train_raw, n1 = read_documents(root / "train.jsonl", text_field=cfg.text_field)
        test_raw, n2 = (
            read_documents(root / "test.jsonl", text_field=cfg.text_field)
            if (root / "test.jsonl").exists()
            else ([], 0)
        )
        report.files = n1 + n2
        train = clean_documents(train_raw, min_chars=cfg.min_chars, pii=cfg.pii, report=report)
        kept_train = report.kept
        test = clean_documents(test_raw, min_chars=cfg.min_chars, pii=cfg.pii, report=report)
        test = [d for d in test if d not in set(train)]
        report.kept = kept_train + len(test)
    else:
        raw, report.files = read_documents(root, text_field=cfg.text_field)
        docs = clean_documents(raw, min_chars=cfg.min_chars, pii=cfg.pii, report=report)
        random.Random(cfg.seed).shuffle(docs)
        n_test = int(len(docs) * cfg.eval_fraction)
        if cfg.eval_fraction > 0 and n_test == 0 and len(docs) >= 2:
            n_test = 1
        test, train = docs[:n_test], docs[n_test:]
    if not train:
        raise SnapshotError(f"{root}: no training documents left after cleaning ({report.as_dict()})")
    digest = hashlib.sha256("\x00".join([*train, "\x01", *test]).encode()).hexdigest()
    manifest = dict(manifest or {})
    manifest.setdefault("snapshot_id", root.name)
    manifest.setdefault("kind", "documents")
    manifest.setdefault("content_hash", digest)
    manifest["cleaned_content_hash"] = digest
    manifest["cleaning"] = report.as_dict()
    return manifest, train, test, report


def run(cfg: Config) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    with RecipeRun(cfg) as rr:
        manifest, train_docs, test_docs, report = load_documents(cfg)
        tok = load_tokenizer(cfg.model_name_or_path)
        ensure_distinct_pad(tok)
        train_blocks = pack_documents(train_docs, tok, cfg.max_length)
        test_blocks = pack_documents(test_docs, tok, cfg.max_length) if test_docs else []
        if not train_blocks:
            raise SnapshotError(
                f"{cfg.snapshot_dir}: the documents make no training block of {cfg.max_length} tokens"
            )
        snap = Snapshot(
            Path(cfg.snapshot_dir),
            manifest,
            [{"input_ids": b} for b in train_blocks],
            [{"input_ids": b} for b in test_blocks],
            {},
        )
        rr.attach_snapshot(snap)
        model = load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok)
        args = SFTConfig(
            **rr.trainer_kwargs(), max_length=cfg.max_length, packing=False, completion_only_loss=False
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(snap.train),
            eval_dataset=Dataset.from_list(snap.test) if snap.test else None,
            processing_class=tok,
            peft_config=lora_config(cfg, "CAUSAL_LM"),
            callbacks=[rr.callback()],
        )
        metrics = rr.train(trainer, evaluate=bool(snap.test))
        if "eval_loss" in metrics:
            metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
        return rr.finish(
            trainer=trainer,
            tokenizer=tok,
            eval_metrics=metrics,
            merge_loader=lambda: load_causal_lm(cfg.model_name_or_path, cfg=cfg, tokenizer=tok),
            extra={
                "documents": report.as_dict(),
                "blocks": {"train": len(train_blocks), "test": len(test_blocks)},
            },
        )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(Config, run))
