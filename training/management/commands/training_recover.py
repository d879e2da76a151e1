"""``manage.py training_recover``: re-queue runs whose worker died (stale heartbeat)."""

from django.core.management.base import BaseCommand

from training import services


class Command(BaseCommand):
    help = "Re-queue training runs left running by a dead worker; they resume from their checkpoints."

    def handle(self, *args, **opts):
        ids = services.training_runs_recover()
        self.stdout.write(f"re-queued {len(ids)} run(s): {ids}")
