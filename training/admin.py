from django import forms
from django.contrib import admin, messages

from training import models, services


@admin.register(models.TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "method",
        "status",
        "progress_step",
        "progress_total",
        "project",
        "snapshot",
        "parent_version",
        "reward_run",
        "created_at",
    ]
    list_filter = ["method", "status"]
    readonly_fields = ["metrics", "log_tail", "error", "heartbeat_at", "attempts", "output_dir"]
    actions = ["cancel_runs", "requeue_runs"]

    @admin.action(description="Cancel the selected runs")
    def cancel_runs(self, request, queryset):
        for run in queryset:
            services.training_run_cancel(run_id=run.pk)

    @admin.action(description="Queue failed/cancelled runs again (resume from checkpoint)")
    def requeue_runs(self, request, queryset):
        for run in queryset:
            try:
                services.training_run_requeue(run_id=run.pk)
            except services.TrainingRunError as exc:
                self.message_user(request, str(exc), messages.WARNING)


class TrainingScheduleForm(forms.ModelForm):
    class Meta:
        model = models.TrainingSchedule
        fields = [
            "name", "project", "method", "config", "export_filters", "parent_version", "follow_latest",
            "trigger", "hour", "check_every_minutes", "min_new_labels", "enabled",
        ]  # fmt: skip

    def clean(self):
        data = super().clean()
        probe = models.TrainingSchedule(
            **{k: v for k, v in data.items() if k in {f.name for f in models.TrainingSchedule._meta.fields}}
        )
        try:
            services.training_schedule_check(schedule=probe)
        except services.TrainingRunError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(models.TrainingSchedule)
class TrainingScheduleAdmin(admin.ModelAdmin):
    """Editing a schedule here keeps its django-celery-beat PeriodicTask in step (through the service)."""

    form = TrainingScheduleForm

    list_display = [
        "name",
        "project",
        "method",
        "trigger",
        "min_new_labels",
        "enabled",
        "last_checked_at",
        "last_run",
    ]
    list_filter = ["method", "trigger", "enabled"]
    readonly_fields = ["periodic_task", "last_checked_at", "last_decision", "last_run"]
    actions = ["fire_now"]

    def save_model(self, request, obj, form, change):
        services.training_schedule_save(schedule=obj)  # the form's clean() ran the same checks

    def delete_model(self, request, obj):
        services.training_schedule_delete(schedule=obj)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            services.training_schedule_delete(schedule=schedule)

    @admin.action(description="Fire now (checks the label threshold)")
    def fire_now(self, request, queryset):
        for schedule in queryset:
            run = services.training_schedule_fire(schedule_id=schedule.pk)
            schedule.refresh_from_db()
            self.message_user(
                request,
                f"{schedule.name}: {schedule.last_decision}",
                messages.INFO if run is None else messages.SUCCESS,
            )
