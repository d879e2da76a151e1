"""The dataset card (README.md) and manifest.json of a snapshot: deterministic, no timestamps."""

from __future__ import annotations

import json
from typing import Any

from feedback.exports.spec import ExportSpec

KIND_TRL = {
    "preference": "RewardTrainer, DPOTrainer, ORPOTrainer (and KTOTrainer, which splits pairs)",
    "unpaired": "KTOTrainer",
    "sft": "SFTTrainer",
    "raw": "no trainer: every annotation as given, annotators pseudonymised",
}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _yaml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def dataset_card(
    *,
    name: str,
    snapshot_id: str,
    spec: ExportSpec,
    manifest: dict[str, Any],
    stats: dict[str, Any],
    files: list[str],
) -> bytes:
    counts = manifest["row_counts"]
    data_ext = "parquet" if "train.parquet" in files else "jsonl"
    lines = [
        "---",
        f"license: {spec.license}",
        f"pretty_name: {_yaml_str(name)}",
        "tags:",
        "- arbiter",
        "- trl",
        f"- {spec.kind}",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: train.{data_ext}",
        "  - split: test",
        f"    path: test.{data_ext}",
        "---",
        "",
        f"# {name}",
        "",
        f"Arbiter snapshot {snapshot_id}, kind **{spec.kind}** ({spec.style} format), for {KIND_TRL[spec.kind]}.",
        "",
        f"- Content hash (SHA-256 of the canonical JSONL of both splits): `{manifest['content_hash']}`",
        f"- Licence: {spec.license}",
        f"- Columns: {', '.join(manifest['columns'])}",
        "",
        "## Counts",
        "",
        "| split | rows | prompts |",
        "|---|---:|---:|",
        f"| train | {counts['train']} | {stats['prompts']['train']} |",
        f"| test | {counts['test']} | {stats['prompts']['test']} |",
        "",
        f"Split by prompt (seed {manifest['seed']}, test fraction {manifest['test_fraction']:g}): "
        "no prompt appears on both sides.",
        "",
        "## Agreement",
        "",
        f"- Items read: {stats['items']}; with two or more votes: {stats['items_with_2_or_more_votes']}",
        "- Mean agreement (share of votes that side with the item's majority, over items with two or more "
        f"votes): {stats['mean_agreement'] if stats['mean_agreement'] is not None else 'n/a'}",
        f"- Source rows read: {stats['source_rows']}",
        "",
        "Rows left out, by reason:",
        "",
    ]
    dropped = stats.get("dropped") or {}
    if dropped:
        lines += [f"- {reason}: {n}" for reason, n in sorted(dropped.items())]
    else:
        lines.append("- none")
    lines += ["", "## Filters", "", "| filter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in spec.describe()]
    lines += [
        "",
        "## Files",
        "",
        *[f"- `{f}`" for f in files],
        "",
        "## Load",
        "",
        "```python",
        *(
            ["from datasets import load_from_disk", 'ds = load_from_disk("hf")']
            if "hf/" in files
            else [
                "from datasets import load_dataset",
                f'ds = load_dataset("{data_ext if data_ext == "parquet" else "json"}", '
                f'data_files={{"train": "train.{data_ext}", "test": "test.{data_ext}"}})',
            ]
        ),
        "```",
        "",
        "Truncated candidates (finish reason `length`) are "
        + (
            "included and flagged in `*_truncated` columns."
            if spec.include_truncated
            else "left out: TRL would append an end-of-turn token and train cut-off answers as finished."
        ),
        "",
    ]
    return "\n".join(lines).encode("utf-8")
