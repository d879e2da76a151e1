"""The transformers engine on tiny random models (CPU, 1 torch thread)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from inference.engines import load_generator
from inference.engines.base import SamplingParams
from inference.engines.errors import EngineError
from inference.engines.transformers_engine import TransformersGenerator


def reference_greedy(model_dir: Path, messages, steps: int) -> list[int]:
    """Greedy tokens by plain full forward passes: no cache, no padding, no generate()."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(steps):
            token = int(model(ids).logits[0, -1].argmax())
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def test_n_samples_shapes_counts_and_progress(tiny_generator, prompts):
    seen: list[int] = []
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=1.0, seed=3)
    out = tiny_generator.generate(prompts, n=4, params=params, progress=seen.append)
    assert [len(samples) for samples in out] == [4] * len(prompts)
    assert sum(seen) == len(prompts)
    for messages, samples in zip(prompts, out, strict=True):
        assert {g.prompt_tokens for g in samples} == {len(tiny_generator.encode(messages))}
        for g in samples:
            assert g.finish_reason in ("stop", "length")
            assert 1 <= g.completion_tokens <= 12
            if g.finish_reason == "length":
                assert g.completion_tokens == 12
        # sampling at temperature 1 over a 500-token vocabulary: the samples differ
        assert len({g.text for g in samples}) > 1


def test_seeded_sampling_is_reproducible(tiny_generator, prompts):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=11)
    first = tiny_generator.generate(prompts, n=2, params=params)
    again = tiny_generator.generate(prompts, n=2, params=params)
    other = tiny_generator.generate(
        prompts, n=2, params=SamplingParams(max_new_tokens=8, temperature=1.0, seed=12)
    )
    assert first == again
    assert first != other


def test_greedy_n_gives_n_copies(tiny_generator, prompts):
    out = tiny_generator.generate(prompts[:2], n=3, params=SamplingParams(max_new_tokens=6, temperature=0))
    for samples in out:
        assert len(samples) == 3 and len(set(samples)) == 1


def test_left_padding_matches_unbatched_and_reference(tiny_model_dir, prompts):
    params = SamplingParams(max_new_tokens=16, temperature=0)
    batched = TransformersGenerator(tiny_model_dir, device="cpu", batch_size=8)
    single = TransformersGenerator(tiny_model_dir, device="cpu", batch_size=1)
    together = batched.generate(prompts, n=1, params=params)
    alone = [single.generate([p], n=1, params=params)[0] for p in prompts]
    assert together == alone
    # and both are what plain greedy decoding gives (nothing hit EOS: 'length', 16 tokens)
    tokenizer = batched.tokenizer
    for messages, (generation,) in zip(prompts, together, strict=True):
        tokens = reference_greedy(tiny_model_dir, messages, 16)
        if tokenizer.eos_token_id not in tokens:
            assert generation.finish_reason == "length"
            assert generation.completion_tokens == 16
            assert generation.text == tokenizer.decode(tokens, skip_special_tokens=True)


def _with_extra_eos(src: Path, dst: Path, token: int) -> Path:
    shutil.copytree(src, dst)
    config_path = dst / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = [config["eos_token_id"], token]
    config_path.write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_pad_eos_dir"])
def test_eos_ends_each_row_exactly(fixture, prompts, tmp_path, request):
    """A second EOS id (as Llama-3 has) that prompt 0 emits at step 3 ends that row there.

    With pad == eos (the SmolLM2 layout) the finished row is padded with EOS ids while the
    others go on: the count must stop at the first one.
    """
    model_dir: Path = request.getfixturevalue(fixture)
    steps = 14
    references = [reference_greedy(model_dir, p, steps) for p in prompts]
    first = references[0]
    eos_token = next(t for i, t in enumerate(first) if i >= 2 and t not in first[:i])
    stop_at = first.index(eos_token)
    model_with_eos = _with_extra_eos(model_dir, tmp_path / "model", eos_token)
    generator = TransformersGenerator(model_with_eos, device="cpu", batch_size=8)
    eos_ids = set(generator.eos_ids)
    assert eos_token in eos_ids
    out = generator.generate(prompts, n=1, params=SamplingParams(max_new_tokens=steps, temperature=0))
    assert out[0][0].finish_reason == "stop" and out[0][0].completion_tokens == stop_at + 1
    for tokens, (generation,) in zip(references, out, strict=True):
        end = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
        if end is None:
            assert (generation.finish_reason, generation.completion_tokens) == ("length", steps)
            body = tokens
        else:
            assert (generation.finish_reason, generation.completion_tokens) == ("stop", end + 1)
            body = tokens[:end]
        assert generation.text == generator.tokenizer.decode(body, skip_special_tokens=True)


def test_stop_strings_cut_text_and_count_tokens(tiny_model_dir, tiny_generator, prompts):
    steps = 16
    tokenizer = tiny_generator.tokenizer
    tokens = reference_greedy(tiny_model_dir, prompts[1], steps)
    full = tokenizer.decode(tokens, skip_special_tokens=True)
    head = len(tokenizer.decode(tokens[:3], skip_special_tokens=True))
    start = next(
        i for i in range(head, len(full) - 1) if full[i : i + 2].isascii() and full[i : i + 2].isprintable()
    )
    stop = full[start : start + 2]
    cut = full.find(stop)
    expected_tokens = next(
        k for k in range(1, steps + 1) if stop in tokenizer.decode(tokens[:k], skip_special_tokens=True)
    )
    params = SamplingParams(max_new_tokens=steps, temperature=0, stop=("\x00never\x00", stop))
    out = tiny_generator.generate(prompts, n=2, params=params)
    generation = out[1][0]
    assert generation.finish_reason == "stop"
    assert generation.text == full[:cut]
    assert stop not in generation.text
    assert generation.completion_tokens == expected_tokens
    for samples in out:
        for g in samples:
            assert not any(s in g.text for s in params.stop)


def test_lora_adapter_changes_outputs_merged_or_not(tiny_model_dir, tiny_adapter_dir, prompts):
    params = SamplingParams(max_new_tokens=10, temperature=0)
    base = TransformersGenerator(tiny_model_dir, device="cpu").generate(prompts, n=1, params=params)
    merged = load_generator(
        "transformers", model=str(tiny_model_dir), adapter=str(tiny_adapter_dir), device="cpu"
    ).generate(prompts, n=1, params=params)
    unmerged = TransformersGenerator(
        tiny_model_dir, adapter_path=tiny_adapter_dir, device="cpu", merge_adapter=False
    ).generate(prompts, n=1, params=params)
    assert merged != base
    assert [s[0].text for s in merged] == [s[0].text for s in unmerged]


def test_bad_inputs_give_clear_errors(tiny_generator, tmp_path):
    with pytest.raises(EngineError, match="cannot load"):
        TransformersGenerator(tmp_path / "missing", device="cpu")
    long_prompt = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "word " * 600}]]
    with pytest.raises(EngineError, match=r"prompt 1: .* exceed the model's 512 positions"):
        tiny_generator.generate(long_prompt, n=1, params=SamplingParams(max_new_tokens=8))
    with pytest.raises(ValueError, match="n must be"):
        tiny_generator.generate([], n=0, params=SamplingParams())
    with pytest.raises(ValueError, match="unknown engine"):
        load_generator("nope", model="x")
    with pytest.raises(ValueError, match="base_url"):
        load_generator("openai", model="x")
