from django.contrib import admin

from inference import models


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "engine", "base_model", "parent", "training_run", "created_at"]
    search_fields = ["name"]


@admin.register(models.GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "status",
        "progress_done",
        "progress_total",
        "items_created",
        "created_at",
    ]
    list_filter = ["status", "project"]
    readonly_fields = ["progress_done", "progress_total", "items_created", "error", "log_tail"]
