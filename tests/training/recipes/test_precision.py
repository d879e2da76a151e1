"""bf16 on a CPU: autocast over float32 weights where the CPU has native bfloat16, refused elsewhere."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import training.recipes.dpo as dpo
from training.recipes import modeling, recipe

from .conftest import base_config, write_snapshot


def test_bf16_on_a_cpu_without_native_bfloat16_is_refused(tmp_path, tiny_lm, monkeypatch):
    snap = write_snapshot(tmp_path / "snap", "preference")
    cfg = recipe("dpo").Config.from_dict(base_config(tiny_lm, snap, tmp_path / "out", bf16=True))
    monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(modeling.ModelLoadError, match="native bfloat16"):
        modeling.use_bf16(cfg)
    off = recipe("dpo").Config.from_dict(base_config(tiny_lm, snap, tmp_path / "out"))
    assert modeling.use_bf16(off) is False and modeling.load_dtype(off) == torch.float32


@pytest.mark.skipif(
    not modeling.cpu_has_native_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)"
)
def test_bf16_on_a_cpu_autocasts_training_and_saves_float32_weights(tmp_path, tiny_lm, monkeypatch):
    snap = write_snapshot(tmp_path / "snap", "preference")
    seen: list[tuple[bool, torch.dtype]] = []
    real_load = dpo.load_causal_lm

    def spying_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        assert next(model.parameters()).dtype == torch.float32  # autocast, not bfloat16 weights
        # the LM head: completion_logits.py runs it at the completion tokens without the model's own forward
        model.get_output_embeddings().register_forward_hook(
            lambda _m, _i, out: seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        )
        return model

    monkeypatch.setattr(dpo, "load_causal_lm", spying_load)
    out = tmp_path / "out"
    cfg = base_config(tiny_lm, snap, out, bf16=True, max_steps=2, padding_free=False)
    result = dpo.run(dpo.Config.from_dict(cfg))
    assert result["status"] == "succeeded"
    # Training and the final evaluation ran under autocast, with bfloat16 logits.
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen), seen
    weights = load_file(str(out / "final" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_the_cpu_autocast_reads_each_weight_as_it_is_now_not_as_first_cast():
    # A recipe stays in one autocast context for its whole train(): autocast's weight cache would keep the
    # first bfloat16 copy of every trainable weight, and forward passes would never see the updates.
    from training.recipes.runtime import cpu_bf16_autocast

    layer = torch.nn.Linear(4, 4)
    x = torch.ones(1, 4)
    with cpu_bf16_autocast():
        before = layer(x)
        with torch.no_grad():
            layer.weight.add_(1.0)  # what an optimiser step does
        after = layer(x)
    assert before.dtype == after.dtype == torch.bfloat16
    assert torch.allclose(after.float(), before.float() + 4.0, atol=0.1)
