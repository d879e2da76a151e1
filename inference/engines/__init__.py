"""Django-free generation engines behind one ``Generator`` protocol (see ``base.py``).

``load_generator(engine, model=..., adapter=..., **settings)`` picks the backend:

- ``"transformers"``: ``model`` is a local HF folder; settings: device, dtype, batch_size…
- ``"vllm"``: ``model`` is a local HF folder (in-process ``vllm.LLM``; CUDA only).
- ``"openai"``: ``model`` is the served model name; settings: base_url (required), api_key,
  concurrency, timeout, max_retries. With ``adapter`` (a folder the *server* can read), the
  adapter is loaded into the running server (vLLM's ``/v1/load_lora_adapter``) under
  ``adapter_name`` (default: the folder's name) and requests go to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference.engines.base import Generation, Generator, Messages, SamplingParams

ENGINES = ("transformers", "vllm", "openai")

__all__ = ["ENGINES", "Generation", "Generator", "Messages", "SamplingParams", "load_generator"]


def load_generator(engine: str, *, model: str, adapter: str | None = None, **settings: Any) -> Generator:
    """Build the generator for ``engine`` (one of ``ENGINES``)."""
    if engine == "transformers":
        from inference.engines.transformers_engine import TransformersGenerator

        return TransformersGenerator(model, adapter_path=adapter, **settings)
    if engine == "vllm":
        from inference.engines.vllm_engine import VLLMGenerator

        return VLLMGenerator(model, adapter_path=adapter, **settings)
    if engine == "openai":
        from inference.engines.openai_engine import OpenAIGenerator

        settings = dict(settings)
        if "base_url" not in settings:
            raise ValueError("engine 'openai' needs the base_url setting (e.g. http://host:8000)")
        adapter_name = settings.pop("adapter_name", None)
        generator = OpenAIGenerator(model=model, **settings)
        if adapter:
            name = adapter_name or Path(adapter).name
            generator.load_lora_adapter(name, adapter)
            generator.model = name
        return generator
    raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
