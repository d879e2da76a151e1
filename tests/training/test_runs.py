"""Runs through the Celery task from real snapshots: every method trains, registers a version whose
weights changed (reward: a model PPO then uses), a killed child leaves a failed, resumable run and
no version, and a resumed run finishes from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse
from safetensors.torch import load_file

from inference.models import JobStatus, ModelVersion
from training import services, tasks
from training.models import TrainingRun

SMALL = {
    "max_steps": 3,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 4,
    "max_length": 64,
    "learning_rate": 5e-3,
    "lora_r": 4,
    "lora_alpha": 8,
    "save_steps": 2,
    "device": "cpu",
}


def _changed(a_dir: str | Path, b_dir: str | Path) -> float:
    a, b = (
        load_file(str(Path(a_dir) / "model.safetensors")),
        load_file(str(Path(b_dir) / "model.safetensors")),
    )
    return max(
        float((a[k].float() - b[k].float()).abs().max()) for k in a if k in b and a[k].shape == b[k].shape
    )


def _run(run: TrainingRun) -> TrainingRun:
    assert tasks.training_run_run(run.pk) in ("succeeded", "failed", "cancelled")
    run.refresh_from_db()
    return run


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize(
    "method,kind", [("dpo", "preference"), ("kto", "unpaired"), ("orpo", "preference"), ("sft", "sft")]
)
def test_policy_method_through_the_task_registers_a_changed_version(
    labelled, base_version, tiny_model_dir, method, kind, admin_client
):
    project, snap = labelled(kind)
    run = services.training_run_create(
        method=method, snapshot=snap, parent_version=base_version, config=SMALL, enqueue=False
    )
    assert run.project == project and run.status == JobStatus.QUEUED
    run = _run(run)
    assert run.status == JobStatus.SUCCEEDED, run.error + run.log_tail
    assert run.progress_total == 3 and run.progress_step == 3 and run.heartbeat_at and run.attempts == 1
    version = ModelVersion.objects.get(training_run=run)
    assert version.parent == base_version and version.base_model == run.metrics["final_dir"]
    assert _changed(tiny_model_dir, version.base_model) > 0
    assert run.metrics["snapshot"]["snapshot_id"] == str(snap.pk) and run.metrics["eval"]
    page = admin_client.get(reverse("training_run", args=[run.pk])).content.decode()
    assert version.name in page and f"#{snap.pk} {snap.name}" in page and page.count("<svg") >= 2


@pytest.mark.django_db
def test_reward_then_ppo_pipeline_and_active_selection(
    labelled, base_version, tiny_model_dir, make_item, project_factory
):
    from feedback.models import Item

    project, snap = labelled("preference", n_prompts=12)
    rm, ppo = services.training_pipeline_create_rm_ppo(
        snapshot=snap,
        parent_version=base_version,
        reward_config=SMALL,
        ppo_config={**SMALL, "max_steps": 2, "response_length": 8, "num_ppo_epochs": 1, "eval_prompts": 4},
        enqueue=False,
    )
    assert ppo.reward_run == rm and ppo.config["reward_model_path"] == str(Path(rm.output_dir) / "final")
    assert not services.training_run_claim(run_id=ppo.pk)  # waits for its reward run
    rm = _run(rm)
    assert rm.status == JobStatus.SUCCEEDED, rm.error + rm.log_tail
    assert not ModelVersion.objects.filter(training_run=rm).exists()  # a reward model is no policy
    assert 0 <= rm.metrics["eval"]["eval_accuracy"] <= 1
    assert _changed(tiny_model_dir, rm.metrics["final_dir"]) > 0
    ppo = _run(ppo)
    assert ppo.status == JobStatus.SUCCEEDED, ppo.error + ppo.log_tail
    version = ModelVersion.objects.get(training_run=ppo)
    assert _changed(tiny_model_dir, version.base_model) > 0
    assert "eval_win_rate_vs_reference" in ppo.metrics["eval"]

    # Active selection: fresh, unannotated items get a priority from the reward model.
    fresh = [
        make_item(project, texts=["short", "a much longer answer than the other one"], version=base_version)
        for _ in range(3)
    ]
    assert services.items_prioritise_by_reward(run_id=rm.pk) >= 3
    prios = [Item.objects.get(pk=i.pk).priority for i in fresh]
    assert all(0 < p <= 1 for p in prios)


@pytest.mark.django_db
def test_cpt_run_from_documents(training_dirs, base_version, tiny_model_dir):
    docs = training_dirs / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"d{i}.md").write_text("# Note\n\n" + "Django is a web framework written in Python. " * 8)
    run = services.training_run_create(
        method="cpt",
        documents_dir=docs,
        parent_version=base_version,
        config={**SMALL, "max_length": 32},
        enqueue=False,
    )
    run = _run(run)
    assert run.status == JobStatus.SUCCEEDED, run.error + run.log_tail
    assert run.metrics["documents"]["kept"] == 1  # six copies of one note: deduplicated
    assert _changed(tiny_model_dir, ModelVersion.objects.get(training_run=run).base_model) > 0


@pytest.mark.django_db
def test_killed_child_leaves_failed_resumable_run_and_no_version(labelled, base_version):
    _, snap = labelled("preference", n_prompts=16)
    run = services.training_run_create(
        method="dpo",
        snapshot=snap,
        parent_version=base_version,
        config={
            **SMALL,
            "max_steps": 400,
            "save_steps": 3,
            "save_total_limit": 2,
            "per_device_train_batch_size": 2,
        },
        enqueue=False,
    )
    assert services.training_run_claim(run_id=run.pk)

    def kill_after_checkpoint(row, process):
        if services.latest_checkpoint_step(Path(row.output_dir)) >= 3:
            process.kill()

    run = services.training_run_execute(run_id=run.pk, on_poll=kill_after_checkpoint)
    assert run.status == JobStatus.FAILED and "killed by signal 9" in run.error and "resume" in run.error
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert not (Path(run.output_dir) / "final").exists()
    step = services.latest_checkpoint_step(Path(run.output_dir))
    assert step >= 3

    services.training_run_requeue(run_id=run.pk, enqueue=False)
    # Finish quickly: the resumed run keeps the same config (a changed one would be refused).
    run = _run(run)
    assert run.status == JobStatus.SUCCEEDED, run.error + run.log_tail
    assert run.metrics["resumed_from_step"] >= step and run.attempts == 2
    assert ModelVersion.objects.filter(training_run=run).count() == 1


@pytest.mark.django_db
def test_cancel_stops_a_running_child(labelled, base_version):
    _, snap = labelled("preference")
    run = services.training_run_create(
        method="dpo",
        snapshot=snap,
        parent_version=base_version,
        config={**SMALL, "max_steps": 400},
        enqueue=False,
    )
    assert services.training_run_claim(run_id=run.pk)

    def cancel_once_running(row, process):
        if TrainingRun.objects.get(pk=row.pk).progress_step >= 1:
            services.training_run_cancel(run_id=row.pk)

    run = services.training_run_execute(run_id=run.pk, on_poll=cancel_once_running)
    assert run.status == JobStatus.CANCELLED and not ModelVersion.objects.filter(training_run=run).exists()


@pytest.mark.django_db
def test_stale_running_run_is_reclaimed(labelled, base_version):
    from datetime import timedelta

    from django.utils import timezone

    _, snap = labelled("preference", annotate=True, n_prompts=4)
    run = services.training_run_create(
        method="dpo", snapshot=snap, parent_version=base_version, config=SMALL, enqueue=False
    )
    assert services.training_run_claim(run_id=run.pk)
    assert not services.training_run_claim(run_id=run.pk)  # a live worker holds it
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.training_runs_recover(enqueue=False) == [run.pk]
    assert TrainingRun.objects.get(pk=run.pk).status == JobStatus.QUEUED


@pytest.mark.django_db
def test_bad_config_and_snapshot_rejected_at_create(labelled, base_version):
    _, snap = labelled("unpaired", n_prompts=4)
    with pytest.raises(services.TrainingRunError, match="reads \\['preference'\\]"):
        services.training_run_create(method="dpo", snapshot=snap, parent_version=base_version, enqueue=False)
    with pytest.raises(services.TrainingRunError, match="per_device_train_batch_size"):
        services.training_run_create(
            method="kto",
            snapshot=snap,
            parent_version=base_version,
            config={"per_device_train_batch_size": 1},
            enqueue=False,
        )
    with pytest.raises(services.TrainingRunError, match="set by the app"):
        services.training_run_create(
            method="kto",
            snapshot=snap,
            parent_version=base_version,
            config={"output_dir": "x"},
            enqueue=False,
        )
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_reference_defaults_to_the_lineage_root(labelled, base_version):
    _, snap = labelled("preference", n_prompts=4)
    child = ModelVersion.objects.create(
        name="round1", base_model=base_version.base_model, parent=base_version
    )
    run = services.training_run_create(
        method="dpo", snapshot=snap, parent_version=child, config=SMALL, enqueue=False
    )
    assert run.config["ref_model_name_or_path"] == base_version.base_model


@pytest.mark.django_db(transaction=True)
def test_adapter_trained_from_a_served_base_is_loaded_into_the_running_server(
    labelled, tiny_model_dir, training_dirs
):
    """Parent served by an OpenAI-compatible server (as by ``vllm serve FOLDER``): the run's LoRA
    adapter is registered on the same server and loaded into it live, without a restart."""
    from inference.engines.server import ModelServer
    from inference.engines.transformers_engine import TransformersGenerator
    from inference.models import Engine

    def loader(path):
        return TransformersGenerator(tiny_model_dir, adapter_path=path, device="cpu")

    served = str(tiny_model_dir)  # vllm serve's default model name is the folder it was given
    with ModelServer(
        TransformersGenerator(served, device="cpu"), model_name=served, adapter_loader=loader
    ).start() as server:
        parent = ModelVersion.objects.create(
            name="served-base",
            base_model=served,
            engine=Engine.OPENAI,
            engine_settings={"base_url": server.url},
        )
        _, snap = labelled("preference")
        run = services.training_run_create(
            method="dpo",
            snapshot=snap,
            parent_version=parent,
            config={**SMALL, "save_mode": "adapter"},
            enqueue=False,
        )
        run = _run(run)
        assert run.status == JobStatus.SUCCEEDED, run.error + run.log_tail
        version = ModelVersion.objects.get(training_run=run)
        assert version.engine == Engine.OPENAI and version.engine_settings["base_url"] == server.url
        assert version.base_model == served and version.adapter_path == run.metrics["final_dir"]
        assert version.name in [m["id"] for m in server.models()["data"]]


@pytest.mark.django_db
def test_a_run_past_its_time_limit_is_stopped_and_failed_with_no_version(labelled, base_version):
    _, snap = labelled("preference", n_prompts=8)
    run = services.training_run_create(
        method="dpo",
        snapshot=snap,
        parent_version=base_version,
        config={**SMALL, "max_steps": 400, "per_device_train_batch_size": 2},
        timeout_s=3,
        enqueue=False,
    )
    run = _run(run)
    assert run.status == JobStatus.FAILED and "time limit (3 s)" in run.error
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert not (Path(run.output_dir) / "final").exists()
