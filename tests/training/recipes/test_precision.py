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
        model.register_forward_hook(
            lambda _m, _i, out: seen.append((torch.is_autocast_enabled("cpu"), out.logits.dtype))
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


def test_holding_the_frozen_lora_base_in_bf16_changes_no_output_or_gradient_under_autocast(tiny_lm):
    # Under autocast each forward pass casts every float32 weight to bfloat16; holding the frozen base
    # weights in bfloat16 once gives the same values, so logits and the LoRA gradients stay the same.
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.recipes.runtime import cpu_bf16_autocast

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    ids = torch.randint(0, model.config.vocab_size, (2, 12))

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        with cpu_bf16_autocast():
            logits = model(input_ids=ids).logits
        logits.float().logsumexp(-1).sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        return logits.detach(), grads

    before, grads_before = run()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    cast = modeling.hold_frozen_lora_base_in_bf16(model)
    after, grads_after = run()

    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert cast == sum(p.numel() for n, p in model.named_parameters() if dtypes[n] == torch.bfloat16) > 0
    assert all(dtypes[n] == torch.float32 for n in trainable)  # the optimiser's weights stay float32
    assert all(dtypes[n] == torch.float32 for n in dtypes if "embed" in n or "norm" in n)
    assert torch.equal(before, after)
    assert all(torch.equal(a, b) for a, b in zip(grads_before, grads_after, strict=True))


@pytest.mark.skipif(
    not modeling.cpu_has_native_bf16(), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)"
)
def test_bf16_ppo_rolls_out_from_a_bf16_frozen_base_and_saves_float32_weights(tmp_path, tiny_lm, monkeypatch):
    import training.recipes.ppo as ppo

    snap = write_snapshot(tmp_path / "snap", "preference")
    reward = recipe("reward")
    rm = reward.run(reward.Config.from_dict(base_config(tiny_lm, snap, tmp_path / "rm", max_steps=1)))
    held: list[int] = []
    real_hold = ppo.hold_frozen_lora_base_in_bf16
    monkeypatch.setattr(ppo, "hold_frozen_lora_base_in_bf16", lambda model: held.append(real_hold(model)))
    cfg = base_config(
        tiny_lm,
        snap,
        tmp_path / "ppo",
        reward_model_path=rm["final_dir"],
        bf16=True,
        max_steps=2,
        response_length=8,
        num_ppo_epochs=1,
        eval_prompts=4,
    )
    result = ppo.run(ppo.Config.from_dict(cfg))
    assert result["status"] == "succeeded" and held and held[0] > 0
    assert 0 <= result["eval"]["eval_win_rate_vs_reference"] <= 1
    weights = load_file(str(tmp_path / "ppo" / "final" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
