"""Model versions: registering one, loading its adapter into a running OpenAI-compatible server."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from inference.models import Engine, ModelVersion
from inference.services.errors import GenerationJobError

logger = logging.getLogger(__name__)


# -- model versions ---------------------------------------------------------------------------
@transaction.atomic
def model_version_register(
    *,
    name: str,
    base_model: str,
    adapter_path: str = "",
    engine: Engine | str = Engine.TRANSFORMERS,
    engine_settings: dict | None = None,
    parent: ModelVersion | None = None,
    is_demo: bool = False,
    training_run: Any = None,
) -> ModelVersion:
    """Register (or update) a version. An adapter version served by an OpenAI-compatible server
    (``engine="openai"``, ``engine_settings["base_url"]``) is loaded into that running server
    once the transaction commits (vLLM's ``/v1/load_lora_adapter``), without a restart."""
    defaults: dict[str, Any] = {
        "base_model": base_model,
        "adapter_path": adapter_path,
        "engine": Engine(engine),
        "engine_settings": engine_settings or {},
        "parent": parent,
        "is_demo": is_demo,
    }
    if training_run is not None:
        defaults["training_run"] = training_run
    version, _ = ModelVersion.objects.update_or_create(name=name, defaults=defaults)
    if version.engine == Engine.OPENAI and version.adapter_path and "base_url" in version.engine_settings:
        transaction.on_commit(lambda: model_version_load_adapter(version=version, quiet=True))
    return version


def model_version_load_adapter(*, version: ModelVersion, quiet: bool = False) -> bool:
    """Load the version's adapter into its running server under the version's name.

    Returns True if it was loaded now, False if the server had it. With ``quiet``, a server
    that cannot be reached is logged, not raised: generation loads the adapter again anyway.
    """
    from inference.engines.errors import RemoteError
    from inference.engines.openai_engine import OpenAIGenerator

    if version.engine != Engine.OPENAI or not version.adapter_path:
        raise GenerationJobError(f"{version.name}: only an adapter version on an OpenAI server loads")
    settings_ = dict(version.engine_settings)
    client = OpenAIGenerator(
        base_url=settings_["base_url"],
        model=version.base_model,
        api_key=settings_.get("api_key"),
        max_retries=int(settings_.get("max_retries", 2)),
        timeout=float(settings_.get("timeout", 120)),
    )
    try:
        return client.load_lora_adapter(version.name, version.adapter_path)
    except RemoteError:
        if not quiet:
            raise
        logger.warning("could not load adapter %s into %s now", version.name, settings_["base_url"])
        return False
