from django.contrib import admin

from feedback import models


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "task_kind", "responses_per_item", "annotations_required", "created_at"]
    search_fields = ["name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "flagged"]
    list_filter = ["role", "flagged", "project"]


@admin.register(models.PromptImport)
class PromptImportAdmin(admin.ModelAdmin):
    list_display = ["source", "project", "rows_read", "rows_imported", "duplicates_dropped", "created_at"]
    list_filter = ["project"]


@admin.register(models.Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "text", "created_at"]
    list_filter = ["project"]
    search_fields = ["text"]


@admin.register(models.Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "model_version", "finish_reason", "completion_tokens"]
    list_filter = ["model_version", "finish_reason"]
    raw_id_fields = ["prompt", "generation_job"]


class ItemCandidateInline(admin.TabularInline):
    model = models.ItemCandidate
    extra = 0
    raw_id_fields = ["candidate"]


@admin.register(models.Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "annotations_count",
        "annotations_required",
        "is_open",
        "is_gold",
        "priority",
    ]
    list_filter = ["project", "is_open", "is_gold"]
    raw_id_fields = ["prompt"]
    inlines = [ItemCandidateInline]


@admin.register(models.Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["item", "annotator", "expires_at"]
    raw_id_fields = ["item"]


@admin.register(models.Skip)
class SkipAdmin(admin.ModelAdmin):
    list_display = ["item", "annotator", "reason", "created_at"]
    raw_id_fields = ["item"]


@admin.register(models.Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "annotator", "kind", "created_at"]
    list_filter = ["kind"]
    raw_id_fields = ["item"]


@admin.register(models.PreferencePair)
class PreferencePairAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "chosen", "rejected", "is_tie", "margin"]
    raw_id_fields = ["annotation", "prompt", "chosen", "rejected"]


@admin.register(models.BinaryLabel)
class BinaryLabelAdmin(admin.ModelAdmin):
    list_display = ["id", "candidate", "label"]
    raw_id_fields = ["annotation", "candidate"]


@admin.register(models.Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "created_at"]
    raw_id_fields = ["annotation", "prompt"]


@admin.register(models.DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "kind", "content_hash", "created_at"]
    readonly_fields = ["content_hash", "row_counts", "path"]
