"""Padding-free forward passes (training.recipes.packing): same logits, same gradients, fewer slots."""

from __future__ import annotations

import pytest
import torch

from training.recipes.packing import enable_packing, plan_packing, unpack_logits

torch.set_num_threads(1)


def _batch(
    lengths: list[int], *, width: int | None = None, left: bool = False, vocab: int = 200, seed: int = 0
):
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    ids = torch.full((len(lengths), width), 3, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for b, n in enumerate(lengths):
        sl = slice(width - n, width) if left else slice(0, n)
        ids[b, sl] = torch.randint(5, vocab, (n,), generator=g)
        mask[b, sl] = 1
    return ids, mask


@pytest.fixture(scope="module")
def model():
    from inference.engines.tiny import build_tiny_model

    m, _ = build_tiny_model(None, seed=1, hidden_size=64, layers=2)
    return m.eval()


def test_plan_puts_every_token_once_with_its_own_positions():
    ids, mask = _batch([9, 3, 4, 2, 8, 1])
    plan = plan_packing(ids, mask, capacity=0)
    assert plan is not None
    # capacity = the longest sequence (9): FFD gives [9], [8, 1], [4, 3, 2]
    assert (plan.rows, plan.width) == (3, 9)
    flat_ids = plan.input_ids.reshape(-1)
    flat_pos = plan.position_ids.reshape(-1)
    real = mask.reshape(-1).bool()
    assert torch.equal(flat_ids[plan.gather[real]], ids.reshape(-1)[real])
    assert sorted(plan.gather[real].tolist()) == sorted(set(plan.gather[real].tolist()))  # no slot twice
    for b, n in enumerate(mask.sum(1).tolist()):
        assert flat_pos[plan.gather[b * ids.shape[1] : b * ids.shape[1] + n]].tolist() == list(range(n))


def test_plan_declines_batches_it_cannot_pack_or_shrink():
    ids, mask = _batch([5, 5, 5])
    assert plan_packing(ids, mask, capacity=0) is None  # nothing to gain
    ids, mask = _batch([5, 2])
    mask[0, 2] = 0  # a hole in the middle of a row
    assert plan_packing(ids, mask, capacity=8) is None
    ids, mask = _batch([4, 0])
    assert plan_packing(ids, mask, capacity=8) is None


@pytest.mark.parametrize("left", [False, True])
def test_packed_logits_equal_each_sequence_run_alone(model, left):
    lengths = [17, 5, 9, 3, 12, 2, 6, 4]
    ids, mask = _batch(lengths, left=left)
    plan = plan_packing(ids, mask, capacity=24)
    assert plan is not None and plan.rows * plan.width < ids.numel() * 0.6
    with torch.no_grad():
        packed = model(input_ids=plan.input_ids, position_ids=plan.position_ids, use_cache=False).logits
        logits = unpack_logits(packed, plan, *ids.shape)
        for b in range(len(lengths)):
            alone = model(input_ids=ids[b][mask[b].bool()][None]).logits[0]
            got = logits[b][mask[b].bool()]
            torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-4)


def test_wrapped_forward_gives_the_same_loss_and_gradients(model):
    """A masked log-likelihood (what DPO/KTO sum) through the padded model and the packed one."""
    import copy

    padded_model = copy.deepcopy(model).train()
    packed_model = copy.deepcopy(model).train()
    seen = []  # what reaches the model's own forward
    own = packed_model.forward
    packed_model.forward = lambda *a, **k: seen.append(k.get("position_ids")) or own(*a, **k)
    assert enable_packing(packed_model, capacity=0)
    assert not enable_packing(packed_model, capacity=0)  # wrapped once only
    ids, mask = _batch([20, 4, 7, 11, 3, 5], seed=3)

    def loss_of(m):
        logits = m(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        return -(logps * mask[:, 1:]).sum()

    a, b = loss_of(padded_model), loss_of(packed_model)
    assert len(seen) == 1 and seen[0] is not None and seen[0].shape[0] < ids.shape[0]  # packed rows
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    a.backward()
    b.backward()
    for (name, p), q in zip(padded_model.named_parameters(), packed_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_generation_and_cache_calls_are_left_alone(model):
    import copy

    m = copy.deepcopy(model)
    enable_packing(m, capacity=0)
    ids, mask = _batch([6, 2, 3], left=True)
    out = m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=3)
    ref = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=3
    )
    assert torch.equal(out, ref)


def test_peft_model_is_wrapped_underneath(model):
    import copy

    from peft import LoraConfig, get_peft_model

    from training.recipes.packing import innermost_model

    peft = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"))
    inner = innermost_model(peft)
    assert type(inner).__name__ == "LlamaForCausalLM"
    assert enable_packing(peft, capacity=0)
    assert getattr(inner.forward, "__arbiter_packed__", False)
    ids, mask = _batch([12, 3, 4, 5], seed=4)
    with torch.no_grad():
        got = peft(input_ids=ids, attention_mask=mask).logits
        with peft.disable_adapter():
            ref_got = peft(input_ids=ids, attention_mask=mask).logits
    for b in range(ids.shape[0]):
        alone = model(input_ids=ids[b][mask[b].bool()][None]).logits[0]
        torch.testing.assert_close(ref_got[b][mask[b].bool()], alone, atol=1e-5, rtol=1e-4)
        assert got[b][mask[b].bool()].shape == alone.shape


@pytest.mark.parametrize(
    "method,kind",
    [("dpo", "preference"), ("kto", "unpaired"), ("orpo", "preference"), ("reward", "preference")],
)
def test_recipes_train_the_same_with_and_without_padding(tmp_path, tiny_lm, monkeypatch, method, kind):
    """The trainer's own calls get packed, and the losses they log match the padded run's."""
    import json

    from training.recipes import packing, recipe

    from .conftest import base_config, write_snapshot

    long = " ".join(["because the answer runs on and on"] * 8)
    extra = [
        {
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "completion": [{"role": "assistant", "content": long}],
            "label": False,
        }
        if kind == "unpaired"
        else {
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": long}],
        }
        for i in range(8)
    ]
    snap = write_snapshot(tmp_path / "snap", kind, train=8, extra_rows=extra)
    packed_calls = []
    real_plan = packing.plan_packing
    monkeypatch.setattr(
        packing, "plan_packing", lambda *a, **k: packed_calls.append(p := real_plan(*a, **k)) or p
    )
    mod = recipe(method)
    losses = {}
    for padding_free in (False, True):
        out = tmp_path / f"out-{padding_free}"
        cfg = base_config(
            tiny_lm, snap, out, padding_free=padding_free, logging_steps=1, lora_dropout=0.0, max_length=128
        )
        mod.run(mod.Config.from_dict(cfg))
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        losses[padding_free] = [x["loss"] for x in lines if "loss" in x]
    assert sum(p is not None for p in packed_calls) >= 3, (
        packed_calls
    )  # each step's policy and reference passes
    assert len(losses[True]) == len(losses[False]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-3, abs=1e-4)


def test_classifier_scores_equal_each_sequence_scored_alone():
    """A reward model: the packed backbone's last-token states through the head, per sequence."""
    import copy

    from peft import LoraConfig, get_peft_model

    from inference.engines.tiny import build_tiny_model

    rm, _ = build_tiny_model(None, seed=2, hidden_size=64, layers=2, num_labels=1)
    rm.config.pad_token_id = 3
    peft = get_peft_model(copy.deepcopy(rm), LoraConfig(r=4, lora_alpha=8, task_type="SEQ_CLS"))
    for p in peft.parameters():  # a non-zero LoRA path, so the adapter matters
        p.data.add_(0.01 * torch.randn_like(p))
    peft.eval()
    lengths = [14, 3, 6, 9, 2, 5]
    ids, mask = _batch(lengths, seed=5)
    with torch.no_grad():
        padded = peft(input_ids=ids, attention_mask=mask).logits
        assert enable_packing(peft, capacity=0)
        packed = peft(input_ids=ids, attention_mask=mask).logits
        alone = torch.cat([peft(input_ids=ids[b, :n][None]).logits for b, n in enumerate(lengths)])
    assert packed.shape == (len(lengths), 1)
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-4)
