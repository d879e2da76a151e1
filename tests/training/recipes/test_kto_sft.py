"""KTO's optional SFT term: the thumbs-up completions' mean token NLL, added to the training loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.recipes import recipe
from training.recipes.kto import desirable_nll
from training.recipes.scoring import completion_logps

from .conftest import base_config, write_snapshot


def test_desirable_nll_is_the_mean_token_nll_of_the_thumbs_up_completions(tiny_lm):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    vocab = model.config.vocab_size
    # Three right-padded rows: (prompt length, completion length); rows 0 and 2 are thumbs up.
    shapes = [(4, 3), (3, 6), (5, 2)]
    width = max(p + c for p, c in shapes)
    ids = torch.zeros(3, width, dtype=torch.long)
    attention = torch.zeros(3, width, dtype=torch.long)
    completion = torch.zeros(3, width, dtype=torch.long)
    rows = []
    for i, (p, c) in enumerate(shapes):
        seq = torch.randint(1, vocab, (p + c,))
        rows.append((seq, p))
        ids[i, : p + c] = seq
        attention[i, : p + c] = 1
        completion[i, p : p + c] = 1
    inputs = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}

    with torch.no_grad():
        got = desirable_nll(model, {**inputs, "label": torch.tensor([True, False, True])})
        total, tokens = 0.0, 0
        for seq, p in (rows[0], rows[2]):  # each thumbs-up row alone, unpadded
            logps = torch.log_softmax(model(input_ids=seq[None]).logits[0, :-1].float(), -1)
            picked = logps.gather(-1, seq[1:, None]).squeeze(-1)[p - 1 :]
            total -= float(picked.sum())
            tokens += len(seq) - p
        assert got is not None
        assert float(got) == pytest.approx(total / tokens, rel=1e-5)
        assert desirable_nll(model, {**inputs, "label": torch.tensor([False, False, False])}) is None


def _thumbs_up_logps(model_dir: Path, snapshot: Path) -> float:
    rows = [json.loads(x) for x in (snapshot / "train.jsonl").read_text().splitlines()]
    up = [r for r in rows if r["label"]]
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        logps = completion_logps(model, tok, [r["prompt"] for r in up], [r["completion"] for r in up])
    return sum(logps) / len(logps)


def test_kto_with_an_sft_term_logs_it_and_keeps_thumbs_up_answers_likelier(tmp_path, tiny_lm):
    snap = write_snapshot(tmp_path / "snap", "unpaired", train=16)
    mod = recipe("kto")
    finals = {}
    for weight in (0.0, 1.0):
        out = tmp_path / f"out-{weight}"
        cfg = base_config(tiny_lm, snap, out, max_steps=6, sft_weight=weight, final_eval=False)
        mod.run(mod.Config.from_dict(cfg))
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        logged = [x["sft_nll"] for x in lines if "sft_nll" in x]
        assert bool(logged) == (weight > 0), lines
        finals[weight] = _thumbs_up_logps(out / "final", snap)
    # Same seed and data: without the term wired in, the two runs would end identical.
    assert finals[1.0] > finals[0.0] + 0.1, finals


def test_a_negative_sft_weight_is_refused(tmp_path, tiny_lm):
    snap = write_snapshot(tmp_path / "snap", "unpaired")
    with pytest.raises(ValueError, match="sft_weight"):
        recipe("kto").Config.from_dict(base_config(tiny_lm, snap, tmp_path / "out", sft_weight=-1))


def test_apo_zero_unpaired_skips_the_kl_estimate_passes(tmp_path, tiny_lm, monkeypatch):
    """loss_type apo_zero_unpaired is KTO with the reference point fixed at 0: per step, the
    policy's and the reference's passes over the batch, without the two over mismatched pairs."""
    import training.recipes.kto as kto

    snap = write_snapshot(tmp_path / "snap", "unpaired", train=16)
    calls: list[int] = []
    real_load = kto.load_causal_lm

    def counting_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        # the decoder: the passes of completion_logits.py run it without the model's own forward
        model.get_decoder().register_forward_hook(lambda *_: calls.append(1))
        return model

    monkeypatch.setattr(kto, "load_causal_lm", counting_load)
    counts, kls = {}, {}
    for loss_type in ("kto", "apo_zero_unpaired"):
        calls.clear()
        out = tmp_path / loss_type
        cfg = base_config(tiny_lm, snap, out, max_steps=3, loss_type=loss_type, final_eval=False)
        kto.run(kto.Config.from_dict(cfg))
        counts[loss_type] = len(calls)
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        kls[loss_type] = [x["kl"] for x in lines if "kl" in x]
        assert (out / "final").is_dir()
    # The merge at the end loads the model once more: the same in both runs.
    assert counts["kto"] - counts["apo_zero_unpaired"] == 2 * 3, counts
    assert kls["apo_zero_unpaired"] and all(k == 0 for k in kls["apo_zero_unpaired"]), kls


def test_apo_zero_unpaired_allows_a_batch_of_one_and_unknown_loss_types_are_refused(tmp_path, tiny_lm):
    snap = write_snapshot(tmp_path / "snap", "unpaired")
    Config = recipe("kto").Config
    one = {"per_device_train_batch_size": 1, "per_device_eval_batch_size": 1}
    Config.from_dict(base_config(tiny_lm, snap, tmp_path / "out", loss_type="apo_zero_unpaired", **one))
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        Config.from_dict(base_config(tiny_lm, snap, tmp_path / "out", **one))
    with pytest.raises(ValueError, match="loss_type"):
        Config.from_dict(base_config(tiny_lm, snap, tmp_path / "out", loss_type="sigmoid"))
