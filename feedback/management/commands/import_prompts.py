from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from feedback.importing import ImportFileError
from feedback.models import Project
from feedback.services.imports import prompts_import_file


class Command(BaseCommand):
    help = "Import prompts from JSONL (prompt or messages), CSV or a datasets folder. All or nothing."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--project", required=True, help="Project name or slug.")
        parser.add_argument("--format", choices=["jsonl", "csv", "datasets"], default=None)

    def handle(self, *args, path: Path, project: str, format: str | None, **options):
        proj = Project.objects.filter(slug=project).first() or Project.objects.filter(name=project).first()
        if proj is None:
            raise CommandError(f"No project named {project!r}.")
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        try:
            report = prompts_import_file(project=proj, path=path, file_format=format)
        except ImportFileError as exc:
            raise CommandError(f"{path}: {exc}. Nothing was imported.") from None
        self.stdout.write(
            f"Imported {report.rows_imported} of {report.rows_read} prompts into {proj.name}: "
            f"{report.duplicates_dropped} duplicates dropped; PII flagged {report.pii_flagged}, "
            f"redacted {report.pii_redacted}, dropped {report.pii_dropped}."
        )
