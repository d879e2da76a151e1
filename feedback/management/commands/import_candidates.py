from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from feedback.importing import ImportFileError
from feedback.models import Project
from feedback.services.imports import candidates_import_file


class Command(BaseCommand):
    help = (
        "Import responses made elsewhere (prompt/messages + response, and the model's name). All or nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--project", required=True)
        parser.add_argument("--model", default=None, help="Model name for rows without a 'model' column.")
        parser.add_argument("--format", choices=["jsonl", "csv", "datasets"], default=None)

    def handle(self, *args, path: Path, project: str, model: str | None, format: str | None, **options):
        proj = Project.objects.filter(slug=project).first() or Project.objects.filter(name=project).first()
        if proj is None:
            raise CommandError(f"No project named {project!r}.")
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        try:
            r = candidates_import_file(project=proj, path=path, model_name=model, file_format=format)
        except ImportFileError as exc:
            raise CommandError(f"{path}: {exc}. Nothing was imported.") from None
        self.stdout.write(
            f"Imported {r.candidates_created} of {r.rows_read} responses ({r.duplicates_dropped} duplicates "
            f"dropped, {r.prompts_created} new prompts, {r.prompts_dropped_pii} dropped for PII); "
            f"{r.items_created} items built."
        )
