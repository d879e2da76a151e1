"""The annotation domain: fields, constraints and small properties only. Logic lives in services."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class TaskKind(models.TextChoices):
    RANKING = "ranking", "Rank k responses"
    PAIRWISE = "pairwise", "Pick A or B"
    BINARY = "binary", "Thumbs up or down"


class PiiPolicy(models.TextChoices):
    FLAG = "flag", "Keep and flag"
    REDACT = "redact", "Replace with placeholders"
    DROP = "drop", "Drop the prompt"


class AssignmentOrder(models.TextChoices):
    FEWEST = "fewest", "Fewest annotations first"
    RANDOM = "random", "Random"
    PRIORITY = "priority", "Highest priority score first"


class Role(models.TextChoices):
    ANNOTATOR = "annotator", "Annotator"
    REVIEWER = "reviewer", "Reviewer"
    ADMIN = "admin", "Admin"


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=200, unique=True)
    guidelines = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    task_kind = models.CharField(max_length=16, choices=TaskKind.choices)
    responses_per_item = models.PositiveSmallIntegerField(default=2)
    annotations_required = models.PositiveSmallIntegerField(
        default=1, help_text="Distinct annotators each item needs."
    )
    lease_ttl_seconds = models.PositiveIntegerField(default=600)
    pii_policy = models.CharField(max_length=8, choices=PiiPolicy.choices, default=PiiPolicy.FLAG)
    assignment_order = models.CharField(
        max_length=10, choices=AssignmentOrder.choices, default=AssignmentOrder.FEWEST
    )
    allow_ties = models.BooleanField(default=True)
    gold_rate = models.FloatField(default=0.0, help_text="Share of next() calls that serve gold.")
    undo_window_seconds = models.PositiveIntegerField(default=60)
    min_agreement = models.FloatField(
        default=0.0,
        help_text="Annotators whose gold accuracy, or agreement (Krippendorff's alpha) with the others, "
        "falls below this are flagged.",
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(responses_per_item__gte=1), name="project_responses_at_least_1"
            ),
            models.CheckConstraint(
                condition=~Q(task_kind="pairwise") | Q(responses_per_item=2),
                name="project_pairwise_shows_two",
            ),
            models.CheckConstraint(
                condition=~Q(task_kind="ranking") | Q(responses_per_item__gte=2),
                name="project_ranking_shows_two_or_more",
            ),
            models.CheckConstraint(
                condition=Q(annotations_required__gte=1), name="project_annotations_at_least_1"
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="project_gold_rate_0_1"
            ),
            models.CheckConstraint(condition=Q(lease_ttl_seconds__gte=1), name="project_lease_ttl_positive"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.ANNOTATOR)
    flagged = models.BooleanField(
        default=False, help_text="Below the quality threshold: left out of exports by default."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class PromptImport(models.Model):
    """One import of a file (or API batch): what came in and what was dropped."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    source = models.CharField(max_length=500)
    file_format = models.CharField(max_length=16)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    rows_read = models.PositiveIntegerField(default=0)
    rows_imported = models.PositiveIntegerField(default=0)
    duplicates_dropped = models.PositiveIntegerField(default=0)
    pii_flagged = models.PositiveIntegerField(default=0)
    pii_redacted = models.PositiveIntegerField(default=0)
    pii_dropped = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.source} → {self.project}"


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    messages = models.JSONField(help_text="Chat messages [{role, content}], ending with a user turn.")
    text = models.TextField(help_text="The messages rendered as plain text, for display and search.")
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64, help_text="sha256 of the normalised messages.")
    pii_kinds = models.JSONField(default=list, blank=True, help_text="PII kinds found on import.")
    source_import = models.ForeignKey(
        PromptImport, null=True, blank=True, on_delete=models.SET_NULL, related_name="prompts"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="prompt_unique_hash"),
        ]

    def __str__(self) -> str:
        return self.text[:80]


class Candidate(models.Model):
    """One response to a prompt, by one model version (or imported from elsewhere)."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="candidates")
    model_version = models.ForeignKey(
        "inference.ModelVersion", on_delete=models.PROTECT, related_name="candidates"
    )
    generation_job = models.ForeignKey(
        "inference.GenerationJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="candidates",
    )
    text = models.TextField()
    text_hash = models.CharField(max_length=64)
    sampling_params = models.JSONField(default=dict, blank=True)
    finish_reason = models.CharField(max_length=16, default="stop")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "model_version", "text_hash"], name="candidate_unique_text"
            ),
        ]

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def __str__(self) -> str:
        return self.text[:80]


class Item(models.Model):
    """A prompt with the candidates shown together: the unit an annotator judges."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="items")
    candidates = models.ManyToManyField(Candidate, through="ItemCandidate", related_name="items")
    annotations_required = models.PositiveSmallIntegerField(
        help_text="Copied from the project when the item is made."
    )
    annotations_count = models.PositiveSmallIntegerField(default=0)
    is_open = models.BooleanField(default=True, help_text="False once enough annotations.")
    is_gold = models.BooleanField(default=False)
    gold_payload = models.JSONField(null=True, blank=True, help_text="The known answer.")
    priority = models.FloatField(default=0.0, help_text="Higher first (active selection).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(annotations_count__lte=F("annotations_required")),
                name="item_not_over_annotated",
            ),
            models.CheckConstraint(
                condition=Q(is_gold=False) | Q(gold_payload__isnull=False),
                name="item_gold_has_answer",
            ),
        ]
        indexes = [
            models.Index(
                fields=["project", "annotations_count", "id"],
                name="item_open_fewest",
                condition=Q(is_open=True),
            ),
            models.Index(
                fields=["project", "-priority", "id"],
                name="item_open_priority",
                condition=Q(is_open=True),
            ),
        ]

    def __str__(self) -> str:
        return f"Item {self.pk} of {self.project_id}"


class ItemCandidate(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="slots")
    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="slots")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["item", "candidate"], name="itemcandidate_unique"),
            models.UniqueConstraint(fields=["item", "position"], name="itemcandidate_position"),
        ]

    def __str__(self) -> str:
        return f"{self.item_id}#{self.position}: {self.candidate_id}"


class Lease(models.Model):
    """An item held by one annotator until expires_at."""

    # No single-column index on either key: (item, annotator) and (annotator, expires_at) lead with them, and
    # each index more is written twice per next + submit cycle (insert, then delete).
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="leases", db_index=False)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases", db_index=False
    )
    order_shown = models.JSONField(default=list, help_text="Candidate ids in display order.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="lease_one_per_annotator"),
        ]
        indexes = [models.Index(fields=["annotator", "expires_at"])]

    def __str__(self) -> str:
        return f"Lease of item {self.item_id} to {self.annotator_id} until {self.expires_at:%H:%M:%S}"


class Skip(models.Model):
    """An annotator passed on an item, with a reason; they are not offered it again."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="skips")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="skips")
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="skip_once"),
        ]

    def __str__(self) -> str:
        return f"Skip of item {self.item_id} by {self.annotator_id}"


class Annotation(models.Model):
    # Both keys lead a unique constraint below ((item, annotator); (annotator, idempotency_key)): no index more.
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="annotations", db_index=False)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations", db_index=False
    )
    kind = models.CharField(max_length=16, choices=TaskKind.choices)
    payload = models.JSONField(help_text="Validated per kind by the submit service.")
    order_shown = models.JSONField(help_text="Candidate ids in the order the annotator saw them.")
    time_spent_ms = models.PositiveIntegerField(default=0)
    comment = models.TextField(blank=True)
    flags = models.JSONField(default=list, blank=True, help_text="harmful, pii, broken …")
    idempotency_key = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="annotation_one_per_item"),
            models.UniqueConstraint(
                fields=["annotator", "idempotency_key"], name="annotation_idempotency_key"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=[k.value for k in TaskKind]), name="annotation_kind_valid"
            ),
        ]
        indexes = [models.Index(fields=["annotator", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} annotation {self.pk} of item {self.item_id}"


class PreferencePair(models.Model):
    """chosen ≻ rejected (or a tie), derived from a ranking or pairwise annotation."""

    # indexed by pair_unique_per_annotation, which leads with it
    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="pairs", db_index=False)
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="pairs")
    chosen = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    rejected = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="+")
    is_tie = models.BooleanField(default=False)
    margin = models.FloatField(null=True, blank=True, help_text="Strength or rank gap, if known.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(chosen=F("rejected")), name="pair_two_candidates"),
            models.UniqueConstraint(
                fields=["annotation", "chosen", "rejected"], name="pair_unique_per_annotation"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.chosen_id} > {self.rejected_id}"
            if not self.is_tie
            else f"{self.chosen_id} = {self.rejected_id}"
        )


class BinaryLabel(models.Model):
    """A thumbs up or down on one candidate (KTO's unpaired label)."""

    # indexed by label_unique_per_annotation, which leads with it
    annotation = models.ForeignKey(
        Annotation, on_delete=models.CASCADE, related_name="labels", db_index=False
    )
    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="labels")
    label = models.BooleanField()
    reasons = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotation", "candidate"], name="label_unique_per_annotation"),
        ]

    def __str__(self) -> str:
        return f"{self.candidate_id}: {'up' if self.label else 'down'}"


class Demonstration(models.Model):
    """A better answer written by an annotator (SFT)."""

    annotation = models.OneToOneField(Annotation, on_delete=models.CASCADE, related_name="demonstration")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="demonstrations")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(text=""), name="demonstration_not_empty"),
        ]

    def __str__(self) -> str:
        return self.text[:80]


class SnapshotKind(models.TextChoices):
    PREFERENCE = "preference", "Preference pairs (prompt, chosen, rejected)"
    UNPAIRED = "unpaired", "Unpaired labels (prompt, completion, label)"
    SFT = "sft", "Demonstrations (prompt, completion)"
    RAW = "raw", "Raw annotations"


class SnapshotStatus(models.TextChoices):
    DRAFT = "draft", "Draft (filters frozen, files not written)"
    WRITTEN = "written", "Written (hash fixed)"
    FAILED = "failed", "Failed"


class DatasetSnapshot(models.Model):
    """A frozen, hashed export of labels; training runs name the one they trained on."""

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=SnapshotKind.choices)
    projects = models.ManyToManyField(Project, related_name="snapshots")
    filters = models.JSONField(default=dict, blank=True)
    frozen = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the filters resolved to at creation (annotation id cut-off, flagged annotators), "
        "so that a re-export reads exactly the same rows.",
    )
    seed = models.IntegerField(default=0, help_text="Seeds the train/test split by prompt.")
    test_fraction = models.FloatField(default=0.1, help_text="Share of prompts held out for test.")
    pseudonym_salt = models.CharField(max_length=64, blank=True, help_text="Keys annotator pseudonyms.")
    status = models.CharField(max_length=10, choices=SnapshotStatus.choices, default=SnapshotStatus.DRAFT)
    row_counts = models.JSONField(default=dict, blank=True)
    stats = models.JSONField(default=dict, blank=True, help_text="Agreement and rows dropped, by reason.")
    content_hash = models.CharField(max_length=64, blank=True)
    file_sizes = models.JSONField(default=dict, blank=True, help_text="Bytes per written file.")
    path = models.CharField(max_length=1000, blank=True, help_text="Folder holding the files.")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    written_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(test_fraction__gte=0) & Q(test_fraction__lt=1), name="snapshot_test_fraction_0_1"
            ),
            models.CheckConstraint(
                condition=~Q(status="written") | ~Q(content_hash=""), name="snapshot_written_has_hash"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"
