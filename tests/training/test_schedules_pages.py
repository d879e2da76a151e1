"""Schedules (below threshold: nothing starts, the reason is recorded), the advisor, the pages and API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from feedback.models import DatasetSnapshot
from inference.models import JobStatus
from training import selectors, services
from training.models import TrainingRun, TrainingSchedule, Trigger


@pytest.mark.django_db
def test_schedule_below_threshold_starts_nothing_and_says_why(labelled, base_version):
    from django_celery_beat.models import PeriodicTask

    project, _ = labelled("preference", n_prompts=6)
    snapshots_before = DatasetSnapshot.objects.count()
    schedule = services.training_schedule_save(
        schedule=TrainingSchedule(
            name="nightly dpo", project=project, method="dpo", parent_version=base_version,
            trigger=Trigger.NEW_LABELS, check_every_minutes=10, min_new_labels=100, config={"max_steps": 2},
        )
    )  # fmt: skip
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.task == "training.tasks.training_schedule_fire" and json.loads(task.args) == [schedule.pk]
    assert task.interval.every == 10 and task.enabled

    assert services.training_schedule_fire(schedule_id=schedule.pk) is None
    schedule.refresh_from_db()
    assert "6 new pairs" in schedule.last_decision and "below the threshold of 100" in schedule.last_decision
    assert not TrainingRun.objects.exists() and DatasetSnapshot.objects.count() == snapshots_before

    # Enough labels: a snapshot is exported and a run queued; the next firing sees no new labels.
    schedule.min_new_labels = 5
    services.training_schedule_save(schedule=schedule)
    run = services.training_schedule_fire(schedule_id=schedule.pk)
    assert run is not None and run.status == JobStatus.QUEUED and run.schedule == schedule
    assert run.snapshot.status == "written" and Path(run.snapshot.path, "train.jsonl").exists()
    TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.SUCCEEDED)
    assert services.training_schedule_fire(schedule_id=schedule.pk) is None
    schedule.refresh_from_db()
    assert f"0 new pairs since run {run.pk}" in schedule.last_decision


@pytest.mark.django_db
def test_threshold_counts_what_the_export_keeps_and_delete_removes_the_beat_entry(labelled, base_version):
    from django_celery_beat.models import PeriodicTask

    from feedback.models import Annotation, Membership

    project, _ = labelled("preference", n_prompts=6)
    schedule = services.training_schedule_save(
        schedule=TrainingSchedule(
            name="s", project=project, method="dpo", parent_version=base_version,
            trigger=Trigger.NEW_LABELS, min_new_labels=1,
        )
    )  # fmt: skip
    assert services.new_labels_since(project=project, method="dpo", after_annotation_id=0) == 6
    # The only annotator gets flagged: the export leaves their pairs out, so the schedule waits.
    annotator = Annotation.objects.filter(item__project=project).first().annotator
    Membership.objects.update_or_create(project=project, user=annotator, defaults={"flagged": True})
    assert services.new_labels_since(project=project, method="dpo", after_annotation_id=0) == 0
    kept = {"include_flagged_annotators": True}
    assert (
        services.new_labels_since(project=project, method="dpo", after_annotation_id=0, export_filters=kept)
        == 6
    )
    assert services.training_schedule_fire(schedule_id=schedule.pk) is None
    schedule.refresh_from_db()
    assert "0 new pairs" in schedule.last_decision and not TrainingRun.objects.exists()

    task_id = schedule.periodic_task_id
    services.training_schedule_delete(schedule=schedule)
    assert not PeriodicTask.objects.filter(pk=task_id).exists()
    assert services.training_schedule_fire(schedule_id=schedule.pk) is None  # a beat entry read before


@pytest.mark.django_db
def test_nightly_schedule_uses_a_crontab_and_bad_config_is_refused(labelled, base_version):
    project, _ = labelled("preference", n_prompts=2, annotate=False)
    schedule = services.training_schedule_save(
        schedule=TrainingSchedule(
            name="n", project=project, method="kto", parent_version=base_version, hour=3
        )
    )
    assert schedule.periodic_task.crontab.hour == "3"
    with pytest.raises(services.TrainingRunError, match="KTO needs > 1"):
        services.training_schedule_save(
            schedule=TrainingSchedule(
                name="bad", project=project, method="kto", parent_version=base_version,
                config={"per_device_train_batch_size": 1},
            )
        )  # fmt: skip
    with pytest.raises(services.TrainingRunError, match="by hand"):
        services.training_schedule_check(
            schedule=TrainingSchedule(name="c", project=project, method="cpt", parent_version=base_version)
        )


@pytest.mark.django_db
def test_advisor_counts_and_pipelines(labelled, settings, tmp_path):
    project, _ = labelled("preference", n_prompts=5)
    advice = selectors.training_advice(project=project)
    assert advice.counts["pairs"] == 5 and advice.counts["thumbs_up"] == 0
    supported = {m.method for m in advice.methods if m.supported}
    assert (
        {"reward+ppo", "dpo", "orpo", "kto"} <= supported
        and "sft" not in supported
        and "cpt" not in supported
    )
    assert ["dpo"] in advice.pipelines and ["reward", "ppo"] in advice.pipelines
    settings.DOCUMENTS_DIR = tmp_path / "docs"
    folder = selectors.documents_dir(project)
    folder.mkdir(parents=True)
    (folder / "a.md").write_text("# doc")
    advice = selectors.training_advice(project=project)
    assert advice.counts["documents"] == 1 and ["cpt", "dpo"] in advice.pipelines

    thumbs_project, _ = labelled("unpaired", n_prompts=6)
    advice = selectors.training_advice(project=thumbs_project)
    assert advice.counts["thumbs_up"] + advice.counts["thumbs_down"] == 6
    assert {m.method for m in advice.methods if m.supported} == {"kto"} and advice.pipelines == [["kto"]]


@pytest.mark.django_db
def test_pages_and_api(client, labelled, base_version, user_factory):
    project, snap = labelled("preference", n_prompts=4)
    staff = user_factory(is_staff=True)
    outsider = user_factory()
    client.force_login(outsider)
    assert client.get(reverse("training_runs")).status_code == 403
    client.force_login(staff)
    page = client.get(reverse("training_runs"))
    assert page.status_code == 200 and b"What" in page.content and b"pairs" in page.content

    resp = client.post(
        reverse("training_runs"),
        {
            "project": project.pk,
            "method": "dpo",
            "snapshot": snap.pk,
            "parent_version": base_version.pk,
            "config": "max_steps: 2\nbeta: 0.2",
        },
    )
    run = TrainingRun.objects.get()
    assert resp.status_code == 302 and run.config["beta"] == 0.2 and run.created_by == staff
    # A run with curves renders them as SVG.
    out = Path(run.output_dir)
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "step": s,
                    "loss": 1 / s,
                    "rewards/margins": s * 0.1,
                    "rewards/accuracies": 0.5,
                    "kl": 0.01 * s,
                }
            )
            + "\n"
            for s in range(1, 6)
        )
    )
    detail = client.get(reverse("training_run", args=[run.pk]))
    assert (
        detail.status_code == 200
        and detail.content.count(b"<svg") == 4
        and b"snapshot" in detail.content.lower()
    )
    assert b'<meta http-equiv="refresh"' in detail.content  # queued: the page refreshes

    bad = client.post(
        reverse("training_runs"),
        {
            "project": project.pk,
            "method": "kto",
            "snapshot": snap.pk,
            "parent_version": base_version.pk,
            "config": "per_device_train_batch_size: 1",
        },
    )
    assert bad.status_code == 302 and TrainingRun.objects.count() == 1

    api = client.get(reverse("api_training_run", args=[run.pk]))
    assert api.status_code == 200 and api.json()["curves"]["loss"][0] == [1, 1.0]
    assert client.post(reverse("api_training_run_cancel", args=[run.pk])).json()["status"] == "cancelled"
    advice = client.get(reverse("api_training_advice", args=[project.pk])).json()
    assert advice["counts"]["pairs"] == 4
    created = client.post(
        reverse("api_training_run_create"),
        {
            "method": "dpo",
            "project": project.pk,
            "parent_version": base_version.pk,
            "snapshot": snap.pk,
            "config": {"max_steps": 1},
        },
        content_type="application/json",
    )
    assert created.status_code == 201 and created.json()["status"] == "queued"
    refused = client.post(
        reverse("api_training_run_create"),
        {"method": "sft", "project": project.pk, "parent_version": base_version.pk, "snapshot": snap.pk},
        content_type="application/json",
    )
    assert refused.status_code == 400 and "reads ['sft']" in refused.json()["message"]
