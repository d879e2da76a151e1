"""manage.py serve_model VERSION: an OpenAI-compatible server for a registered model version."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from inference.models import ModelVersion
from inference.serving import NotServable, model_server_for


class Command(BaseCommand):
    help = (
        "Serve a model version over an OpenAI-compatible API (/v1/chat/completions, /v1/models, "
        "/v1/load_lora_adapter) with the transformers engine: no GPU needed. Register a version with "
        "engine 'openai', base_model VERSION and engine_settings base_url http://HOST:PORT to use it."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", help="Model version name or id.")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the version's).")
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument(
            "--allow-lora-loading",
            action="store_true",
            help="Accept /v1/load_lora_adapter: adapters over this version's base model.",
        )

    def handle(self, *args, version: str, host: str, port: int, device, batch_size, allow_lora_loading, **o):
        found = ModelVersion.objects.filter(name=version).first()
        if found is None and version.isdigit():
            found = ModelVersion.objects.filter(pk=int(version)).first()
        if found is None:
            raise CommandError(f"No model version {version!r}.")
        try:
            server = model_server_for(
                version=found, device=device, batch_size=batch_size, allow_lora_loading=allow_lora_loading
            )
        except NotServable as exc:
            raise CommandError(str(exc)) from None
        httpd = server.bind(host, port)
        self.stdout.write(f"Serving {found.name!r} on {server.url}/v1 (Ctrl-C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
