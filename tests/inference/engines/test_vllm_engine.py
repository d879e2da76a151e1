"""The in-process vLLM engine. Runs where vllm and a CUDA GPU are present; skips elsewhere."""

from __future__ import annotations

import pytest

from inference.engines.base import SamplingParams
from inference.engines.errors import EngineUnavailable
from inference.engines.vllm_engine import vllm_unavailable_reason

REASON = vllm_unavailable_reason()
needs_vllm = pytest.mark.skipif(REASON is not None, reason=f"vLLM cannot run here: {REASON}")


@pytest.mark.skipif(REASON is None, reason="vLLM can run here: the unavailable path is moot")
def test_missing_vllm_gives_a_clear_error(tiny_model_dir):
    from inference.engines import load_generator

    with pytest.raises(EngineUnavailable, match="engine 'vllm' cannot run here"):
        load_generator("vllm", model=str(tiny_model_dir))


@needs_vllm
def test_vllm_n_samples_counts_and_stop(tiny_model_dir, prompts):
    from inference.engines.transformers_engine import TransformersGenerator
    from inference.engines.vllm_engine import VLLMGenerator

    generator = VLLMGenerator(
        tiny_model_dir,
        gpu_memory_utilization=0.3,
        enforce_eager=True,
        dtype="float32",
        max_model_len=512,
    )
    try:
        seen: list[int] = []
        out = generator.generate(
            prompts,
            n=4,
            params=SamplingParams(max_new_tokens=12, temperature=1.0, seed=1),
            progress=seen.append,
        )
        assert [len(s) for s in out] == [4] * len(prompts) and sum(seen) == len(prompts)
        reference = TransformersGenerator(tiny_model_dir, device="cpu")
        for messages, samples in zip(prompts, out, strict=True):
            assert {g.prompt_tokens for g in samples} == {len(reference.encode(messages))}
            for g in samples:
                assert 1 <= g.completion_tokens <= 12
                assert g.finish_reason == "length" or g.completion_tokens < 12
        greedy = SamplingParams(max_new_tokens=12, temperature=0)
        ours = generator.generate(prompts, n=2, params=greedy)
        theirs = reference.generate(prompts, n=2, params=greedy)
        # float32 on both sides: the greedy paths agree on a well-separated random model
        assert [s[0].text for s in ours] == [s[0].text for s in theirs]
        full = ours[1][0].text
        stop = full[len(full) // 2]
        stopped = generator.generate(
            prompts[1:2], n=1, params=SamplingParams(max_new_tokens=12, temperature=0, stop=(stop,))
        )[0][0]
        assert stopped.finish_reason == "stop" and stopped.text == full[: full.find(stop)]
    finally:
        generator.close()


@needs_vllm
def test_vllm_lora_adapter(tiny_model_dir, tiny_adapter_dir, prompts):
    from inference.engines.transformers_engine import TransformersGenerator
    from inference.engines.vllm_engine import VLLMGenerator

    generator = VLLMGenerator(
        tiny_model_dir,
        adapter_path=tiny_adapter_dir,
        gpu_memory_utilization=0.3,
        enforce_eager=True,
        dtype="float32",
        max_model_len=512,
    )
    try:
        greedy = SamplingParams(max_new_tokens=10, temperature=0)
        ours = generator.generate(prompts, n=1, params=greedy)
        theirs = TransformersGenerator(tiny_model_dir, adapter_path=tiny_adapter_dir, device="cpu").generate(
            prompts, n=1, params=greedy
        )
        assert [s[0].text for s in ours] == [s[0].text for s in theirs]
    finally:
        generator.close()
