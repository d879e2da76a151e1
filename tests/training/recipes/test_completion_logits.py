"""Logits at completion tokens only (training.recipes.completion_logits): the same log-probabilities,
gradients, DPO loss and metrics as the full-logits code they replace."""

from __future__ import annotations

import pytest
import torch

from training.recipes.completion_logits import (
    completion_logps,
    lean_dpo_loss,
    lean_kto_loss,
    supports_lean_head,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    from inference.engines.tiny import build_tiny_model

    m, _ = build_tiny_model(None, seed=3, hidden_size=64, layers=2)
    return m.train()


def _batch(prompt_lens: list[int], completion_lens: list[int], vocab: int = 200):
    g = torch.Generator().manual_seed(0)
    width = max(p + c for p, c in zip(prompt_lens, completion_lens, strict=True)) + 2
    ids = torch.full((len(prompt_lens), width), 3, dtype=torch.long)
    mask = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    for b, (p, c) in enumerate(zip(prompt_lens, completion_lens, strict=True)):
        ids[b, : p + c] = torch.randint(5, vocab, (p + c,), generator=g)
        mask[b, : p + c] = 1
        completion[b, p : p + c] = 1
    return ids, mask, completion


def _full_logits_sums(model, ids, mask, completion):
    """What TRL does: every slot's logits, a log-softmax, the completion tokens' entries summed."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    per_token = logits.log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
    per_token = per_token * completion[:, 1:]
    return per_token.sum(1), logits, completion[:, 1:].bool()


@pytest.mark.parametrize("capacity", [None, 64], ids=["padded", "packed"])
def test_completion_logps_equal_the_full_logits_and_their_gradients(model, capacity):
    ids, mask, completion = _batch([3, 5, 2, 4], [6, 1, 9, 0])  # the last row has no completion
    model.zero_grad()
    want, logits, target = _full_logits_sums(model, ids, mask, completion)
    want.sum().backward()
    want_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = completion_logps(
        model, input_ids=ids, attention_mask=mask, completion_mask=completion, capacity=capacity
    )
    got.sums.sum().backward()
    assert got.sums.tolist() == pytest.approx(want.tolist(), abs=1e-4)
    assert got.sums[3].item() == 0.0
    for p, w in zip(model.parameters(), want_grads, strict=True):
        torch.testing.assert_close(p.grad, w, atol=1e-5, rtol=1e-4)
    # the metrics: over the completion tokens, in the batch's row-major order
    picked = logits[target]
    assert got.entropy.tolist() == pytest.approx(
        (-(picked.softmax(-1) * picked.log_softmax(-1)).sum(-1)).tolist(), abs=1e-4
    )
    assert got.mean_logit.tolist() == pytest.approx(picked.mean(-1).tolist(), abs=1e-5)
    assert got.correct.tolist() == (picked.argmax(-1) == ids[:, 1:][target]).tolist()
    assert got.rows.tolist() == target.nonzero()[:, 0].tolist()


def test_models_that_change_their_logits_after_the_head_are_left_alone(model):
    assert supports_lean_head(model)
    model.config.final_logit_softcapping = 30.0
    try:
        assert not supports_lean_head(model)
    finally:
        model.config.final_logit_softcapping = None


def _trainer(tiny_lm, tmp_path, trainer_cls, config_cls, rows: list[dict], **config):
    """A TRL trainer on the tiny model with a LoRA adapter whose B matrices are random (a trained adapter,
    so that the policy and the reference differ), no dropout."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = config_cls(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=4,
        max_length=128,
        report_to=[],
        gradient_checkpointing=False,
        **config,
    )
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_lm),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny_lm),
        peft_config=lora,
    )
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return trainer


def _dpo_trainer(tiny_lm, tmp_path, loss_type=("sigmoid", "sft")):
    from trl import DPOConfig, DPOTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": f"question {i} " + "word " * (i % 3)}],
            "chosen": [{"role": "assistant", "content": "short " * (1 + i % 2)}],
            "rejected": [{"role": "assistant", "content": "a much longer answer " * (2 + i % 4)}],
        }
        for i in range(8)
    ]
    return _trainer(
        tiny_lm,
        tmp_path,
        DPOTrainer,
        DPOConfig,
        rows,
        loss_type=list(loss_type),
        loss_weights=[1.0, 0.5][: len(loss_type)],
    )


def _kto_trainer(tiny_lm, tmp_path, sft_weight: float, loss_type: str = "kto"):
    from trl import KTOConfig, KTOTrainer

    from training.recipes.kto import with_sft_term

    rows = [
        {
            "prompt": [{"role": "user", "content": f"question {i} " + "word " * (i % 3)}],
            "completion": [
                {"role": "assistant", "content": ("short " if i % 3 else "long answer ") * (1 + i)}
            ],
            "label": i % 3 != 0,
        }
        for i in range(8)
    ]
    cls = with_sft_term(KTOTrainer, sft_weight) if sft_weight else KTOTrainer
    return _trainer(tiny_lm, tmp_path, cls, KTOConfig, rows, loss_type=loss_type, desirable_weight=1.5)


def _loss_metrics_grads(trainer, batch) -> tuple[float, dict[str, float], list[torch.Tensor]]:
    """One training loss through the trainer's compute_loss (the recipe's additions included), the
    metrics it logged and the gradients it left."""
    model = trainer.model
    trainer._metrics["train"].clear()
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return loss.item(), {k: v[-1] for k, v in trainer._metrics["train"].items()}, grads


def _assert_same(lean, trl) -> None:
    (lean_loss, lean_metrics, lean_grads), (trl_loss, trl_metrics, trl_grads) = lean, trl
    assert lean_loss == pytest.approx(trl_loss, rel=1e-5)
    assert set(lean_metrics) == set(trl_metrics)
    trl_metrics["num_tokens"] *= (
        2  # the token count is a running total: the second call added its batch again
    )
    for key, value in trl_metrics.items():
        assert lean_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for got, want in zip(lean_grads, trl_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_lean_dpo_loss_equals_trl_loss_metrics_and_gradients(tiny_lm, tmp_path):
    trainer = _dpo_trainer(tiny_lm, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    trl = _loss_metrics_grads(trainer, batch)
    assert lean_dpo_loss(trainer, capacity=128)
    _assert_same(_loss_metrics_grads(trainer, batch), trl)


def test_other_dpo_losses_keep_trl_code(tiny_lm, tmp_path):
    trainer = _dpo_trainer(tiny_lm, tmp_path, loss_type=("ipo",))
    before = trainer._compute_loss
    assert not lean_dpo_loss(trainer, capacity=128)
    assert trainer._compute_loss == before


@pytest.mark.parametrize("loss_type,sft_weight", [("kto", 0.5), ("apo_zero_unpaired", 0.0)])
def test_lean_kto_loss_equals_trl_loss_with_the_sft_term(tiny_lm, tmp_path, loss_type, sft_weight):
    trainer = _kto_trainer(tiny_lm, tmp_path, sft_weight, loss_type)
    batch = next(iter(trainer.get_train_dataloader()))
    assert 0 < sum(batch["label"]) < len(batch["label"])
    trl = _loss_metrics_grads(trainer, batch)
    assert lean_kto_loss(trainer, capacity=128, sft_weight=sft_weight)
    lean = _loss_metrics_grads(trainer, batch)
    assert ("sft_nll" in lean[1]) == (sft_weight > 0)
    _assert_same(lean, trl)
