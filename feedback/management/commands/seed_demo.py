from django.core.management.base import BaseCommand

from feedback.demo.seed import demo_seed


class Command(BaseCommand):
    help = "Create the demo projects and accounts and queue candidate generation by the demo model."

    def add_arguments(self, parser):
        parser.add_argument("--no-model", action="store_true", help="Skip the demo model and generation.")
        parser.add_argument("--max-new-tokens", type=int, default=160)

    def handle(self, *args, no_model: bool, max_new_tokens: int, **options):
        model_path = None
        if not no_model:
            from inference.engines.demo_model import ensure_demo_model

            self.stdout.write("Preparing the demo model (converted once from GGUF, then cached)…")
            model_path = str(ensure_demo_model())
        for login in demo_seed(model_path=model_path, max_new_tokens=max_new_tokens):
            self.stdout.write(f"  {login.role:<10} {login.username} / {login.password}")
