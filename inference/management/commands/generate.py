"""manage.py generate: start, resume or cancel a generation job (runs here, with a progress bar)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from feedback.models import Project
from inference import services
from inference.engines.base import SamplingParams
from inference.models import GenerationJob, JobStatus, ModelVersion, PairingMode


class Command(BaseCommand):
    help = (
        "Generate candidates for a project's prompts with one or more model versions. Runs the job "
        "here with a progress bar (or --enqueue it on the gpu queue). Resumable: --resume JOB."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", help="Project name, slug or id.")
        parser.add_argument(
            "--model-version",
            "-m",
            dest="versions",
            action="append",
            default=[],
            help="Model version name (repeat).",
        )
        parser.add_argument("--n", type=int, default=None, help="Responses per prompt and version.")
        parser.add_argument("--pairing", choices=[c.value for c in PairingMode], default="samples")
        parser.add_argument("--prompt-ids", help="Comma-separated prompt ids (default: all).")
        parser.add_argument("--max-new-tokens", type=int, default=256)
        parser.add_argument("--temperature", type=float, default=0.8)
        parser.add_argument("--top-p", type=float, default=0.95)
        parser.add_argument("--stop", action="append", default=[], help="Stop string (repeat).")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--chunk-size", type=int, default=8)
        parser.add_argument("--enqueue", action="store_true", help="Queue it for a Celery worker.")
        parser.add_argument("--resume", type=int, metavar="JOB", help="Resume a failed or cancelled job.")
        parser.add_argument("--force", action="store_true", help="With --resume: also a job left running.")
        parser.add_argument("--cancel", type=int, metavar="JOB", help="Cancel a job.")

    def handle(self, *args, **o):
        if o["cancel"]:
            job = services.generation_job_cancel(job_id=o["cancel"])
            self.stdout.write(f"Generation job {job.pk}: {job.status} (cancel requested).")
            return
        try:
            if o["resume"]:
                job = services.generation_job_resume(
                    job_id=o["resume"], force=o["force"], enqueue=o["enqueue"]
                )
            else:
                job = self._create(o)
        except (services.GenerationJobError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if o["enqueue"]:
            self.stdout.write(f"Generation job {job.pk} queued on the gpu queue.")
            return
        self._run(job)

    def _create(self, o) -> GenerationJob:
        if not o["project"] or not o["versions"]:
            raise CommandError("--project and at least one --model-version are needed (or --resume JOB).")
        ref = o["project"]
        project = (
            Project.objects.filter(slug=ref).first()
            or Project.objects.filter(name=ref).first()
            or (Project.objects.filter(pk=int(ref)).first() if ref.isdigit() else None)
        )
        if project is None:
            raise CommandError(f"No project named {ref!r}.")
        versions = []
        for name in o["versions"]:
            version = ModelVersion.objects.filter(name=name).first()
            if version is None:
                known = ", ".join(ModelVersion.objects.values_list("name", flat=True)[:20])
                raise CommandError(f"No model version {name!r} (known: {known or 'none'}).")
            versions.append(version)
        prompt_ids = None
        if o["prompt_ids"]:
            try:
                prompt_ids = [int(x) for x in o["prompt_ids"].split(",") if x.strip()]
            except ValueError:
                raise CommandError(
                    f"--prompt-ids must be comma-separated integers: {o['prompt_ids']!r}"
                ) from None
        params = SamplingParams(
            max_new_tokens=o["max_new_tokens"],
            temperature=o["temperature"],
            top_p=o["top_p"],
            stop=tuple(o["stop"]),
            seed=o["seed"],
        )
        return services.generation_job_create(
            project=project,
            model_versions=versions,
            n=o["n"],
            prompt_ids=prompt_ids,
            sampling_params=params,
            pairing=o["pairing"],
            chunk_size=o["chunk_size"],
            enqueue=o["enqueue"],
        )

    def _run(self, job: GenerationJob) -> None:
        from tqdm import tqdm

        if not services.generation_job_claim(job_id=job.pk):
            raise CommandError(f"Generation job {job.pk} is not queued (someone else has it?).")
        job.refresh_from_db()
        bar = tqdm(total=None, unit="prompt", desc=f"job {job.pk}")

        def advance(prompt_ids, process) -> None:
            current = GenerationJob.objects.values("progress_done", "progress_total").get(pk=job.pk)
            bar.total = current["progress_total"]
            bar.n = current["progress_done"]
            bar.refresh()

        job = services.generation_job_execute(job_id=job.pk, on_chunk=advance)
        bar.close()
        self.stdout.write(
            f"Generation job {job.pk}: {job.status}; {job.progress_done}/{job.progress_total} prompts, "
            f"{job.items_created} items."
        )
        if job.status == JobStatus.FAILED:
            raise CommandError(job.error)
