"""Prompt and candidate imports: all or nothing, deduplicated, PII-screened per project policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from feedback import pii
from feedback.importing import (
    CandidateRow,
    PromptRow,
    detect_format,
    read_candidates,
    read_prompts,
    render_messages,
)
from feedback.models import Candidate, PiiPolicy, Project, Prompt, PromptImport
from feedback.services.items import items_build


@dataclass(frozen=True, slots=True)
class ScreenedMessages:
    messages: list[dict[str, str]]
    kinds: list[str]
    dropped: bool


def _screen(messages: list[dict[str, str]], policy: str) -> ScreenedMessages:
    kinds: set[str] = set()
    out = []
    for m in messages:
        found = pii.find_pii(m["content"])
        kinds.update(f.kind for f in found)
        content = pii.redact(m["content"], found) if found and policy == PiiPolicy.REDACT else m["content"]
        out.append({"role": m["role"], "content": content})
    return ScreenedMessages(out, sorted(kinds), dropped=bool(kinds) and policy == PiiPolicy.DROP)


@transaction.atomic
def prompts_import(
    *,
    project: Project,
    rows: list[PromptRow],
    source: str,
    file_format: str,
    created_by: AbstractBaseUser | None = None,
) -> PromptImport:
    """Import parsed rows. Duplicates (within the file and against the project) are dropped and counted."""
    record = PromptImport.objects.create(
        project=project,
        source=source[:500],
        file_format=file_format,
        created_by=created_by,
        rows_read=len(rows),
    )
    seen = set(Prompt.objects.filter(project=project).values_list("content_hash", flat=True))
    new: list[Prompt] = []
    for row in rows:
        screened = _screen(row.messages, project.pii_policy)
        if screened.kinds:
            if screened.dropped:
                record.pii_dropped += 1
                continue
            if project.pii_policy == PiiPolicy.REDACT:
                record.pii_redacted += 1
            else:
                record.pii_flagged += 1
        content_hash = pii.messages_hash(screened.messages)
        if content_hash in seen:
            record.duplicates_dropped += 1
            continue
        seen.add(content_hash)
        new.append(
            Prompt(
                project=project,
                messages=screened.messages,
                text=render_messages(screened.messages),
                metadata=row.metadata,
                content_hash=content_hash,
                pii_kinds=screened.kinds,
                source_import=record,
            )
        )
    Prompt.objects.bulk_create(new, batch_size=1000)
    record.rows_imported = len(new)
    record.save()
    return record


def prompts_import_file(
    *,
    project: Project,
    path: Path,
    file_format: str | None = None,
    created_by: AbstractBaseUser | None = None,
) -> PromptImport:
    """Parse the whole file first (raising ImportFileError with line and field), then import."""
    file_format = file_format or detect_format(path)
    rows = read_prompts(path, file_format)
    return prompts_import(
        project=project, rows=rows, source=str(path), file_format=file_format, created_by=created_by
    )


@dataclass(frozen=True, slots=True)
class CandidateImportReport:
    rows_read: int
    candidates_created: int
    duplicates_dropped: int
    prompts_created: int
    prompts_dropped_pii: int
    items_created: int


@transaction.atomic
def candidates_import(
    *,
    project: Project,
    rows: list[CandidateRow],
    model_name: str | None,
    source: str,
    file_format: str,
    created_by: AbstractBaseUser | None = None,
) -> CandidateImportReport:
    """Responses made elsewhere: prompts are matched by normalised hash (created when new)."""
    from inference.models import Engine, ModelVersion

    for row in rows:
        if not (row.model or model_name):
            from feedback.importing import ImportFileError

            raise ImportFileError(
                "no model named: give a 'model' column or --model", location=row.location, field="model"
            )
    record = PromptImport.objects.create(
        project=project,
        source=source[:500],
        file_format=file_format,
        created_by=created_by,
        rows_read=len(rows),
    )
    prompts = {p.content_hash: p for p in Prompt.objects.filter(project=project)}
    versions: dict[str, ModelVersion] = {}
    created = duplicates = prompts_created = dropped = 0
    touched: set[int] = set()
    for row in rows:
        screened = _screen(row.messages, project.pii_policy)
        if screened.dropped:
            dropped += 1
            continue
        content_hash = pii.messages_hash(screened.messages)
        prompt = prompts.get(content_hash)
        if prompt is None:
            prompt = Prompt.objects.create(
                project=project,
                messages=screened.messages,
                text=render_messages(screened.messages),
                metadata=row.metadata,
                content_hash=content_hash,
                pii_kinds=screened.kinds,
                source_import=record,
            )
            prompts[content_hash] = prompt
            prompts_created += 1
        name = row.model or model_name
        assert name is not None
        version = versions.get(name)
        if version is None:
            version, _ = ModelVersion.objects.get_or_create(name=name, defaults={"engine": Engine.EXTERNAL})
            versions[name] = version
        _, was_created = Candidate.objects.get_or_create(
            prompt=prompt,
            model_version=version,
            text_hash=pii.text_hash(row.text),
            defaults={"text": row.text, "finish_reason": row.finish_reason},
        )
        if was_created:
            created += 1
            touched.add(prompt.pk)
        else:
            duplicates += 1
    record.rows_imported = created
    record.duplicates_dropped = duplicates
    record.pii_dropped = dropped
    record.save()
    items = items_build(project=project, prompt_ids=sorted(touched))
    return CandidateImportReport(
        rows_read=len(rows),
        candidates_created=created,
        duplicates_dropped=duplicates,
        prompts_created=prompts_created,
        prompts_dropped_pii=dropped,
        items_created=items,
    )


def candidates_import_file(
    *,
    project: Project,
    path: Path,
    model_name: str | None = None,
    file_format: str | None = None,
    created_by: AbstractBaseUser | None = None,
) -> CandidateImportReport:
    file_format = file_format or detect_format(path)
    rows = read_candidates(path, file_format)
    return candidates_import(
        project=project,
        rows=rows,
        model_name=model_name,
        source=str(path),
        file_format=file_format,
        created_by=created_by,
    )
