"""The vLLM engine, in process: ``vllm.LLM`` with ``n`` samples per prompt and LoRA adapters.

vLLM is CUDA-only and an optional dependency (the ``gpu`` extra); it is imported when a
``VLLMGenerator`` is built, with a clear error where it is missing. Prompts are rendered with the
model's chat template by the tokenizer and handed to ``LLM.generate`` as token ids
(``{"prompt_token_ids": [...]}``), so that prompt token counts are exact and the template is
the same one the transformers engine uses. Adapters go in a ``LoRARequest``; the engine is built
with ``enable_lora=True`` when one is given (``max_lora_rank`` is read from the adapter).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.engines.base import Generation, Messages, ProgressCallback, SamplingParams
from inference.engines.errors import EngineError, EngineUnavailable


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot run here, or None when it can (used by tests to skip)."""
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        return f"vllm is not installed ({exc}); install the `gpu` extra on a CUDA machine"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "vllm needs a CUDA GPU and torch sees none"
    return None


def _adapter_rank(adapter_path: str) -> int:
    config = Path(adapter_path) / "adapter_config.json"
    try:
        return int(json.loads(config.read_text())["r"])
    except (OSError, KeyError, ValueError) as exc:
        raise EngineError(f"{config}: cannot read the LoRA rank: {exc}") from exc


class VLLMGenerator:
    """Generate with an in-process ``vllm.LLM``."""

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        *,
        adapter_path: str | Path | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        chunk_prompts: int = 1024,
        seed: int = 0,
        enforce_eager: bool = False,
        **engine_args: Any,
    ) -> None:
        reason = vllm_unavailable_reason()
        if reason is not None:
            raise EngineUnavailable(f"engine 'vllm' cannot run here: {reason}")
        from vllm import LLM

        self.model_path = str(model_path)
        self.adapter_path = str(adapter_path) if adapter_path else None
        self.chunk_prompts = max(1, chunk_prompts)
        args: dict[str, Any] = {
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
            "enforce_eager": enforce_eager,
            **engine_args,
        }
        if max_model_len is not None:
            args["max_model_len"] = max_model_len
        self._lora = None
        if self.adapter_path:
            from vllm.lora.request import LoRARequest

            rank = _adapter_rank(self.adapter_path)
            args.update(enable_lora=True, max_lora_rank=max(8, rank), max_loras=1)
            self._lora = LoRARequest(Path(self.adapter_path).name or "adapter", 1, self.adapter_path)
        self.llm = LLM(model=self.model_path, **args)
        self.tokenizer = self.llm.get_tokenizer()
        if not getattr(self.tokenizer, "chat_template", None):
            raise EngineError(f"the tokenizer of {self.model_path!r} has no chat template")

    def encode(self, messages: Messages) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _sampling(self, n: int, params: SamplingParams):
        from vllm import SamplingParams as VSamplingParams

        return VSamplingParams(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
        )

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        n: int,
        params: SamplingParams,
        progress: ProgressCallback | None = None,
    ) -> list[list[Generation]]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        per_prompt = n if params.temperature > 0 else 1  # greedy: one sample, repeated
        sampling = self._sampling(per_prompt, params)
        results: list[list[Generation]] = []
        for start in range(0, len(prompts), self.chunk_prompts):
            chunk = prompts[start : start + self.chunk_prompts]
            inputs = []
            for offset, messages in enumerate(chunk):
                try:
                    inputs.append({"prompt_token_ids": self.encode(messages)})
                except Exception as exc:
                    raise EngineError(
                        f"prompt {start + offset}: cannot apply the chat template: {exc}"
                    ) from exc
            outputs = self.llm.generate(inputs, sampling, use_tqdm=False, lora_request=self._lora)
            for request in outputs:
                prompt_tokens = len(request.prompt_token_ids or [])
                samples = []
                for completion in sorted(request.outputs, key=lambda c: c.index):
                    reason = completion.finish_reason
                    if reason not in ("stop", "length"):
                        raise EngineError(f"vllm ended a sample with finish_reason={reason!r}")
                    samples.append(
                        Generation(completion.text, reason, prompt_tokens, len(completion.token_ids))
                    )
                results.append(samples * n if per_prompt == 1 and n > 1 else samples)
            if progress is not None:
                progress(len(chunk))
        return results

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            del llm
            try:
                import gc

                import torch

                gc.collect()
                torch.cuda.empty_cache()
            except Exception:  # best effort: the process usually exits after this
                pass
