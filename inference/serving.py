"""Serving a registered model version over the OpenAI-compatible API (``manage.py serve_model``)."""

from __future__ import annotations

from typing import Any

from inference.engines.server import ModelServer
from inference.models import Engine, ModelVersion


class NotServable(ValueError):
    pass


def model_server_for(
    *,
    version: ModelVersion,
    device: str | None = None,
    batch_size: int | None = None,
    allow_lora_loading: bool = False,
) -> ModelServer:
    """A (not yet started) server for ``version``, named after it, on the transformers engine.

    vLLM users run ``vllm serve`` instead; this is the path without a GPU. With
    ``allow_lora_loading``, ``/v1/load_lora_adapter`` serves adapters over the same base model.
    """
    from inference.engines import load_generator

    if version.engine in (Engine.OPENAI, Engine.EXTERNAL):
        raise NotServable(f"{version.name} is {version.engine}: it has no local weights to serve")
    settings: dict[str, Any] = {
        k: v for k, v in version.engine_settings.items() if k in ("device", "dtype", "batch_size")
    }
    if device:
        settings["device"] = device
    if batch_size:
        settings["batch_size"] = batch_size
    generator = load_generator(
        "transformers", model=version.base_model, adapter=version.adapter_path or None, **settings
    )
    loader = None
    if allow_lora_loading:

        def loader(path: str):
            return load_generator("transformers", model=version.base_model, adapter=path, **settings)

    return ModelServer(generator, model_name=version.name, adapter_loader=loader)
