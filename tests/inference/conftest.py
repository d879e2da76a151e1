"""Fixtures for the inference tests: tiny random models built from config (no hub), 1 thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def _build(path: Path, *, seed: int, pad_is_eos: bool) -> Path:
    """A tiny Llama whose greedy outputs vary (weights drawn wider than the default init)."""
    from inference.engines.tiny import build_tiny_model

    model, tokenizer = build_tiny_model(seed=seed, hidden_size=64)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3, generator=generator)
    if pad_is_eos:  # SmolLM2's layout: <|im_end|> is EOS and padding at once
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("tiny"), seed=0, pad_is_eos=False)


@pytest.fixture(scope="session")
def tiny_pad_eos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("tiny-pad-eos"), seed=1, pad_is_eos=True)


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A LoRA adapter over the tiny model with non-zero weights (so it changes outputs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, config)
    path = tmp_path_factory.mktemp("tiny-adapter")
    model.save_pretrained(path)
    assert json.loads((path / "adapter_config.json").read_text())["r"] == 4
    return path


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir: Path):
    from inference.engines.transformers_engine import TransformersGenerator

    generator = TransformersGenerator(tiny_model_dir, device="cpu", batch_size=8)
    yield generator
    generator.close()


PROMPTS = [
    [{"role": "user", "content": "hello"}],
    [{"role": "user", "content": "Explain why the sky is blue in one sentence, please."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves"}],
]


@pytest.fixture
def prompts() -> list[list[dict[str, str]]]:
    return [list(p) for p in PROMPTS]
