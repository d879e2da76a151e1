"""Every snapshot format goes into TRL as written: Reward/DPO/KTO/SFT trainers prepare it and take a step.

Tiny random Llama (inference/engines/tiny.py), one torch thread, CPU. Each trainer gets one of the three
file forms (JSONL through datasets' json loader, Parquet, the save_to_disk folder), both styles are used.
"""

from __future__ import annotations

import pytest

from feedback.exports.services import snapshot_create, snapshot_write
from feedback.services.projects import membership_set

from .conftest import annotate_project, shorter_first

pytestmark = pytest.mark.django_db

ANSWERS = [
    "Paris.",
    "Paris is the capital of France.",
    "The capital of France is Paris, because it is the seat of government.",
    "Yes.",
    "Short answers are often better.",
    "A preference pair has a chosen and a rejected response, so it is clear.",
]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from inference.engines.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    build_tiny_model(root / "lm", seed=0)
    build_tiny_model(root / "rm", seed=0, num_labels=1)
    return root


@pytest.fixture
def labelled(project_factory, user_factory, make_item, settings, tmp_path):
    """8 ranking items (k=3) and 8 thumbs items (k=2) annotated by one person, demonstrations included."""
    settings.EXPORTS_DIR = tmp_path / "exports"
    user = user_factory("annotator")
    ranking = project_factory(name="R", task_kind="ranking", responses_per_item=3)
    thumbs = project_factory(name="T", task_kind="binary", responses_per_item=2)
    for p in (ranking, thumbs):
        membership_set(project=p, user=user, role="annotator")
    for i in range(8):
        make_item(ranking, texts=[ANSWERS[(i + j) % 6] + f" ({i})" for j in range(3)])
        make_item(thumbs, texts=[ANSWERS[(i + j) % 6] + f" [{i}]" for j in range(2)])
    annotate_project(
        ranking,
        [user],
        lambda u, item, shown: {"ranking": shorter_first(shown)},
        demonstration=lambda u, item, shown: "Paris, briefly.",
    )
    annotate_project(
        thumbs,
        [user],
        lambda u, item, shown: {
            "labels": {str(c.id): ("up" if c.id == shorter_first(shown)[0] else "down") for c in shown}
        },
    )
    return ranking, thumbs


def _write(name, spec, formats=("jsonl", "parquet", "hf")):
    snap = snapshot_create(name=name, spec=spec, seed=1, test_fraction=0.25)
    return snapshot_write(snapshot=snap, formats=formats)


def _common(tmp_path):
    return dict(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        logging_steps=1,
        max_length=128,
        dataloader_num_workers=0,
    )


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_reward_trainer_reads_parquet_with_margins(labelled, tiny_dirs, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    ranking, _ = labelled
    result = _write("rm", {"kind": "preference", "project_ids": [ranking.id]})
    train = Dataset.from_parquet(str(result.path / "train.parquet"), cache_dir=str(tmp_path / "cache"))
    assert train.column_names == ["prompt", "chosen", "rejected", "margin"]
    assert len(train) == result.row_counts["train"] > 0
    trainer = RewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(tiny_dirs / "rm"),
        args=RewardConfig(**_common(tmp_path)),
        train_dataset=train,
        processing_class=_tokenizer(tiny_dirs / "rm"),
    )
    assert {"chosen_ids", "rejected_ids", "margin"} <= set(trainer.train_dataset.column_names)
    out = trainer.train()
    assert out.global_step == 1


def test_dpo_trainer_reads_jsonl_conversational(labelled, tiny_dirs, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    ranking, _ = labelled
    result = _write(
        "dpo", {"kind": "preference", "project_ids": [ranking.id], "ranking_pairs": "best_vs_rest"}
    )
    ds = load_dataset(
        "json",
        data_files={"train": str(result.path / "train.jsonl"), "test": str(result.path / "test.jsonl")},
        cache_dir=str(tmp_path / "cache"),
    )
    assert ds["train"][0]["chosen"][0]["role"] == "assistant"
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_dirs / "lm"),
        args=DPOConfig(**_common(tmp_path)),
        train_dataset=ds["train"],
        processing_class=_tokenizer(tiny_dirs / "lm"),
    )
    cols = set(trainer.train_dataset.column_names)
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= cols
    assert trainer.train().global_step == 1


def test_dpo_trainer_reads_standard_style_from_disk(labelled, tiny_dirs, tmp_path):
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    ranking, _ = labelled
    result = _write("dpo-std", {"kind": "preference", "project_ids": [ranking.id], "style": "standard"})
    ds = load_from_disk(str(result.path / "hf"))
    assert isinstance(ds["train"][0]["chosen"], str)
    assert len(ds["train"]) == result.row_counts["train"] and len(ds["test"]) == result.row_counts["test"]
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_dirs / "lm"),
        args=DPOConfig(**_common(tmp_path)),
        train_dataset=ds["train"],
        processing_class=_tokenizer(tiny_dirs / "lm"),
    )
    assert "chosen_ids" in trainer.train_dataset.column_names


def test_kto_trainer_reads_unpaired_from_disk(labelled, tiny_dirs, tmp_path):
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer

    _, thumbs = labelled
    result = _write("kto", {"kind": "unpaired", "project_ids": [thumbs.id]})
    ds = load_from_disk(str(result.path / "hf"))
    labels = ds["train"]["label"]
    assert True in labels and False in labels
    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_dirs / "lm"),
        args=KTOConfig(**_common(tmp_path)),
        train_dataset=ds["train"].shuffle(seed=0),
        processing_class=_tokenizer(tiny_dirs / "lm"),
    )
    assert "completion_ids" in trainer.train_dataset.column_names or "completion_input_ids" in (
        trainer.train_dataset.column_names
    )
    assert trainer.train().global_step == 1


def test_sft_trainer_reads_demonstrations(labelled, tiny_dirs, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    ranking, _ = labelled
    for style in ("conversational", "standard"):
        result = _write(
            f"sft-{style}", {"kind": "sft", "project_ids": [ranking.id], "style": style}, ("jsonl",)
        )
        ds = load_dataset(
            "json",
            data_files=str(result.path / "train.jsonl"),
            split="train",
            cache_dir=str(tmp_path / style),
        )
        assert ds.column_names == ["prompt", "completion"]
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_dirs / "lm"),
            args=SFTConfig(**_common(tmp_path)),
            train_dataset=ds,
            processing_class=_tokenizer(tiny_dirs / "lm"),
        )
        assert {"input_ids", "labels"} <= set(trainer.train_dataset.column_names)
    assert trainer.train().global_step == 1


def test_training_recipes_read_the_snapshot_folder(labelled):
    """The training helper's reader (training/recipes/data.py) accepts the folder as written."""
    from training.recipes import data

    ranking, thumbs = labelled
    pref = _write("p", {"kind": "preference", "project_ids": [ranking.id]}, ("jsonl",))
    snap = data.load_snapshot(pref.path, kinds=("preference",))
    assert len(snap.train) == pref.row_counts["train"] and snap.content_hash == pref.content_hash
    unp = _write("u", {"kind": "unpaired", "project_ids": [thumbs.id]}, ("jsonl",))
    assert len(data.load_snapshot(unp.path, kinds=("unpaired",)).train) == unp.row_counts["train"]
    # kept truncated rows carry the flags the reader drops by default
    from feedback.models import Candidate

    Candidate.objects.filter(prompt__project=ranking, text__startswith="Paris.").update(
        finish_reason="length"
    )
    trunc = _write(
        "t", {"kind": "preference", "project_ids": [ranking.id], "include_truncated": True}, ("jsonl",)
    )
    loaded = data.load_snapshot(trunc.path, kinds=("preference",))
    assert sum(loaded.dropped_truncated.values()) > 0
