from django.contrib import admin, messages
from django.utils.html import format_html

from inference import models, services


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "engine", "base_model", "adapter_path", "parent", "training_run", "created_at"]
    search_fields = ["name"]
    actions = ["load_adapter"]

    @admin.action(description="Load the adapter into its running OpenAI/vLLM server")
    def load_adapter(self, request, queryset):
        for version in queryset:
            try:
                loaded = services.model_version_load_adapter(version=version)
                self.message_user(request, f"{version.name}: {'loaded' if loaded else 'already loaded'}")
            except Exception as exc:
                self.message_user(request, f"{version.name}: {exc}", level=messages.ERROR)


@admin.register(models.GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "status", "progress_bar", "items_created", "created_at"]
    list_filter = ["status", "project"]
    readonly_fields = [
        "status",
        "cancel_requested",
        "progress_bar",
        "progress_done",
        "progress_total",
        "items_created",
        "error",
        "log_tail",
        "started_at",
        "finished_at",
    ]
    actions = ["cancel_jobs", "resume_jobs"]

    def has_add_permission(self, request) -> bool:
        return False  # jobs start from the generation page, the API or `manage.py generate`

    @admin.display(description="Progress")
    def progress_bar(self, job: models.GenerationJob) -> str:
        return format_html(
            '<progress max="{}" value="{}"></progress> {}/{}',
            job.progress_total or 1,
            job.progress_done,
            job.progress_done,
            job.progress_total,
        )

    @admin.action(description="Cancel the selected jobs")
    def cancel_jobs(self, request, queryset):
        for job in queryset:
            services.generation_job_cancel(job_id=job.pk)
        self.message_user(request, f"Cancel requested for {queryset.count()} jobs.")

    @admin.action(description="Resume the selected failed or cancelled jobs")
    def resume_jobs(self, request, queryset):
        for job in queryset:
            try:
                services.generation_job_resume(job_id=job.pk)
            except services.GenerationJobError as exc:
                self.message_user(request, str(exc), level=messages.WARNING)
