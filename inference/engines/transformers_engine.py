"""The transformers engine: any causal LM folder, CPU or GPU, batched with left padding.

Prompts are rendered with the model's own chat template (``add_generation_prompt=True``),
sorted by length so that a batch carries little padding, and generated ``n`` at a time (each
prompt's row repeated ``n`` times). Finish reasons and token counts are read off the generated ids:

- the first EOS token ends a response (``stop``; the EOS token is counted, as vLLM does);
- a stop string ends it too (``stop``; the text is cut before the stop string, and the tokens
  are counted up to the one that completed it);
- otherwise the response ran into ``max_new_tokens`` (``length``).

Sampling (``temperature > 0``) draws through ``sampling.NucleusSampler``: transformers' distribution
(temperature, then top-p), without sorting the whole vocabulary on every step.

With ``pad == eos`` (SmolLM2: ``<|im_end|>`` is both) the padding after a finished sequence is
indistinguishable from an EOS, which is why the first EOS, not the last non-pad token, ends it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.engines.base import (
    Generation,
    Messages,
    ProgressCallback,
    SamplingParams,
)
from inference.engines.errors import EngineError

logger = logging.getLogger(__name__)


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device={device!r} was asked for, but torch sees no CUDA device")
    return device


def resolve_dtype(dtype: str | None, device: str):
    import torch

    if dtype in (None, "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        value = getattr(torch, dtype)
    except AttributeError:
        raise EngineError(f"unknown dtype {dtype!r} (use float32, bfloat16, float16 or auto)") from None
    if not isinstance(value, torch.dtype):
        raise EngineError(f"unknown dtype {dtype!r}")
    return value


class TransformersGenerator:
    """Generate with a Hugging Face causal LM (optionally + a LoRA adapter), offline."""

    name = "transformers"

    def __init__(
        self,
        model_path: str | Path,
        *,
        adapter_path: str | Path | None = None,
        device: str | None = "auto",
        dtype: str | None = "auto",
        batch_size: int = 16,
        merge_adapter: bool = True,
        attn_implementation: str | None = "sdpa",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise EngineError(f"batch_size must be >= 1, got {batch_size}")
        self.model_path = str(model_path)
        self.adapter_path = str(adapter_path) if adapter_path else None
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size

        tokenizer_source = self.model_path
        if self.adapter_path and (Path(self.adapter_path) / "tokenizer_config.json").exists():
            tokenizer_source = self.adapter_path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, local_files_only=True)
        except OSError as exc:
            raise EngineError(f"cannot load a tokenizer from {tokenizer_source!r}: {exc}") from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise EngineError(
                f"the tokenizer in {tokenizer_source!r} has no chat template: chat prompts cannot be rendered"
            )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model = AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs)
        except OSError as exc:
            raise EngineError(f"cannot load a causal LM from {self.model_path!r}: {exc}") from exc
        if self.adapter_path:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, self.adapter_path, is_trainable=False)
            except (OSError, ValueError) as exc:
                raise EngineError(f"cannot load the LoRA adapter {self.adapter_path!r}: {exc}") from exc
            if merge_adapter:
                model = model.merge_and_unload()
        model.to(self.device)
        model.eval()
        self.model = model

        eos: set[int] = set()
        for value in (model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if value is None:
                continue
            eos.update(value if isinstance(value, list) else [value])
        if not eos:
            raise EngineError(f"{self.model_path!r} defines no EOS token")
        self.eos_ids = sorted(eos)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self._stop_criteria: dict[tuple[str, ...], Any] = {}
        self._torch = torch

    # -- prompts ---------------------------------------------------------------------------
    def encode(self, messages: Messages) -> list[int]:
        """Token ids of one chat prompt, rendered with the model's chat template."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _stopping(self, stop: tuple[str, ...]):
        if not stop:
            return None
        if stop not in self._stop_criteria:
            from transformers import StoppingCriteriaList, StopStringCriteria

            self._stop_criteria[stop] = StoppingCriteriaList(
                [StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(stop))]
            )
        return self._stop_criteria[stop]

    # -- generation ------------------------------------------------------------------------
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
        encoded = []
        for index, messages in enumerate(prompts):
            try:
                ids = self.encode(messages)
            except Exception as exc:  # template errors name the prompt they came from
                raise EngineError(f"prompt {index}: cannot apply the chat template: {exc}") from exc
            if self.max_positions and len(ids) + params.max_new_tokens > self.max_positions:
                raise EngineError(
                    f"prompt {index}: {len(ids)} prompt tokens + max_new_tokens="
                    f"{params.max_new_tokens} exceed the model's {self.max_positions} positions"
                )
            encoded.append(ids)

        sampling = params.temperature > 0
        per_prompt = n if sampling else 1  # greedy samples are all the same: generate one
        prompts_per_batch = max(1, self.batch_size // per_prompt)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        results: list[list[Generation] | None] = [None] * len(encoded)
        for batch_number, start in enumerate(range(0, len(order), prompts_per_batch)):
            batch = order[start : start + prompts_per_batch]
            if params.seed is not None:
                self._torch.manual_seed(params.seed + batch_number)
            rows = self._generate_batch([encoded[i] for i in batch], per_prompt, params)
            for position, index in enumerate(batch):
                samples = rows[position * per_prompt : (position + 1) * per_prompt]
                if not sampling:
                    samples = samples * n
                results[index] = samples
            if progress is not None:
                progress(len(batch))
        return [r for r in results if r is not None]

    def _generate_batch(
        self, batch: list[list[int]], per_prompt: int, params: SamplingParams
    ) -> list[Generation]:
        torch = self._torch
        width = max(len(ids) for ids in batch)
        # each prompt's row repeated per_prompt times (what num_return_sequences does, which transformers
        # allows only with do_sample=True: the sampler below draws under do_sample=False)
        rows_in = [ids for ids in batch for _ in range(per_prompt)]
        input_ids = torch.full((len(rows_in), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows_in), width), dtype=torch.long)
        for row, ids in enumerate(rows_in):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.pad_id,
            "use_cache": True,
        }
        if params.temperature > 0:
            from inference.engines.sampling import sampling_kwargs

            # the same distribution as transformers' own sampling, without sorting the vocabulary each step
            kwargs.update(
                sampling_kwargs(
                    temperature=params.temperature, top_p=params.top_p, eos_token_ids=self.eos_ids
                )
            )
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        stopping = self._stopping(params.stop)
        if stopping is not None:
            kwargs["stopping_criteria"] = stopping
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                **kwargs,
            )
        generated = output[:, width:].tolist()
        rows = []
        for row, tokens in enumerate(generated):
            prompt_tokens = len(rows_in[row])
            rows.append(self._finish(tokens, prompt_tokens, params))
        return rows

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _finish(self, tokens: list[int], prompt_tokens: int, params: SamplingParams) -> Generation:
        eos = set(self.eos_ids)
        end = next((i for i, token in enumerate(tokens) if token in eos), None)
        body = tokens if end is None else tokens[:end]
        text = self._decode(body)
        if params.stop:
            cut = _first_stop(text, params.stop)
            if cut is not None:
                # The fewest tokens whose text already holds a stop string: those were generated.
                low, high = 1, len(body)
                while low < high:
                    mid = (low + high) // 2
                    if _first_stop(self._decode(body[:mid]), params.stop) is not None:
                        high = mid
                    else:
                        low = mid + 1
                return Generation(text[:cut], "stop", prompt_tokens, low)
        if end is not None:
            return Generation(text, "stop", prompt_tokens, end + 1)
        if len(tokens) >= params.max_new_tokens:
            return Generation(text, "length", prompt_tokens, len(tokens))
        # Shorter than the budget with no EOS: the batch stopped for this row on a criterion
        # (a stop string split across special tokens); count what precedes the padding.
        while body and body[-1] == self.pad_id:
            body = body[:-1]
        return Generation(self._decode(body), "stop", prompt_tokens, len(body))

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    positions = [text.find(s) for s in stop if s]
    positions = [p for p in positions if p >= 0]
    return min(positions) if positions else None
