from django.contrib import admin

from training import models


@admin.register(models.TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "method",
        "status",
        "progress_step",
        "progress_total",
        "snapshot",
        "parent_version",
        "created_at",
    ]
    list_filter = ["method", "status"]
    readonly_fields = ["metrics", "log_tail", "error"]
