"""Loading models and tokenizers from local folders; LoRA; the pad-token guard.

Nothing here downloads: every path must be a local Hugging Face folder (a full model, or a LoRA
adapter folder whose ``adapter_config.json`` names its base).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import RecipeConfig

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Tokens tried, in order, as a pad token distinct from EOS.
PAD_CANDIDATES = ("<pad>", "<|pad|>", "<|endoftext|>", "<unk>")


class ModelLoadError(ValueError):
    pass


def _check_folder(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"model folder {p} does not exist (recipes load local folders only)")
    if not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
        raise ModelLoadError(f"{p} holds neither config.json nor adapter_config.json")
    return p


def adapter_base(path: str | Path) -> Path | None:
    """The base folder of a LoRA adapter folder, or None for a full model."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.exists() or (Path(path) / "config.json").exists():
        return None
    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{cfg} names no base_model_name_or_path")
    return Path(base)


def use_cuda(cfg: RecipeConfig) -> bool:
    if cfg.device == "cpu":
        return False
    import torch

    available = torch.cuda.is_available()
    if cfg.device == "cuda" and not available:
        raise ModelLoadError("device: cuda was asked for but torch sees no CUDA device")
    return available


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX). There, autocast to
    bfloat16 made a training step of the demo model 2.1x faster and a forward pass 2.8x (2 cores,
    2026-12-04); elsewhere it is emulated and slower than float32."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def use_bf16(cfg: RecipeConfig) -> bool:
    """bf16 mixed precision: on CUDA by default where supported; on a CPU only when asked for, and
    only where the CPU has native bfloat16 (autocast over float32 weights)."""
    if not use_cuda(cfg):
        if cfg.bf16 and not cpu_has_native_bf16():
            raise ModelLoadError(
                "bf16: true on a CPU without native bfloat16 (AVX512-BF16 or AMX), where it is emulated "
                "and slower than float32; set bf16 to false or null"
            )
        return bool(cfg.bf16)
    if cfg.bf16 is not None:
        return cfg.bf16
    import torch

    return torch.cuda.is_bf16_supported()


def load_dtype(cfg: RecipeConfig) -> torch.dtype:
    import torch

    if cfg.model_dtype == "auto":
        # On a CPU, bf16 is autocast over float32 weights (the optimiser keeps float32 state).
        return torch.bfloat16 if use_bf16(cfg) and use_cuda(cfg) else torch.float32
    return getattr(torch, cfg.model_dtype)


def load_tokenizer(path: str | Path, *, padding_side: str = "right"):
    from transformers import AutoTokenizer

    p = _check_folder(path)
    source = p
    if not any((p / n).exists() for n in ("tokenizer.json", "tokenizer_config.json")):
        base = adapter_base(p)
        if base is None:
            raise ModelLoadError(f"{p} has no tokenizer files")
        source = base
    tok = AutoTokenizer.from_pretrained(str(source))
    tok.padding_side = padding_side
    return tok


def ensure_distinct_pad(tokenizer) -> str | None:
    """Make the pad token differ from EOS (SmolLM2 ships pad == eos == <|im_end|>).

    With pad == EOS, trainers that derive attention masks or sequence ends from the pad id (PPO,
    the reward head's last-token pick) mask out every end-of-turn token — in the prompt's chat
    template too — and the model never learns where answers stop. An existing special token is
    reused, so the vocabulary (and embedding size) stays the same. Returns the new pad token, or
    None when nothing changed.
    """
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return None
    vocab = tokenizer.get_vocab()
    template = getattr(tokenizer, "chat_template", None) or ""
    for cand in PAD_CANDIDATES + ((tokenizer.unk_token,) if tokenizer.unk_token else ()):
        if (
            cand
            and cand in vocab
            and vocab[cand] != tokenizer.eos_token_id
            and vocab[cand] != tokenizer.bos_token_id
            and cand not in template
        ):
            tokenizer.pad_token = cand
            logger.info("pad token was EOS; using %r (id %s) for padding", cand, vocab[cand])
            return cand
    raise ModelLoadError(
        "the tokenizer's pad token is its EOS token and no other special token can stand in for it; "
        "add a pad token to the model folder's tokenizer first"
    )


def _sync_pad(model, tokenizer) -> None:
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None:
            cfg.pad_token_id = tokenizer.pad_token_id


def load_causal_lm(path: str | Path, *, cfg: RecipeConfig, tokenizer=None):
    """A causal LM from a full folder, or base + merged adapter from an adapter folder."""
    from transformers import AutoModelForCausalLM

    p = _check_folder(path)
    dtype = load_dtype(cfg)
    base = adapter_base(p)
    if base is None:
        model = AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype)
    else:
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(str(_check_folder(base)), dtype=dtype)
        model = PeftModel.from_pretrained(model, str(p)).merge_and_unload()
    if tokenizer is not None:
        _sync_pad(model, tokenizer)
    return model


def load_sequence_classifier(path: str | Path, *, cfg: RecipeConfig, tokenizer=None):
    """A one-logit sequence classifier (reward or value model). A causal LM folder gets a fresh head."""
    from transformers import AutoModelForSequenceClassification

    p = _check_folder(path)
    dtype = load_dtype(cfg)
    base = adapter_base(p)
    if base is None:
        model = AutoModelForSequenceClassification.from_pretrained(str(p), num_labels=1, dtype=dtype)
    else:
        from peft import PeftModel

        model = AutoModelForSequenceClassification.from_pretrained(
            str(_check_folder(base)), num_labels=1, dtype=dtype
        )
        model = PeftModel.from_pretrained(model, str(p)).merge_and_unload()
    if tokenizer is not None:
        _sync_pad(model, tokenizer)
    return model


def lora_config(cfg: RecipeConfig, task_type: str) -> Any:
    if not cfg.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type=task_type,
    )


def weights_fingerprint(model) -> float:
    """Sum of absolute weights: a cheap 'did anything change' probe for tests and logs."""
    import torch

    with torch.no_grad():
        return float(sum(p.detach().float().abs().sum() for p in model.parameters()))
