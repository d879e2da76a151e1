"""NucleusSampler draws from transformers' own sampling distribution (temperature, then top-p)."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from inference.engines.sampling import NucleusSampler


def transformers_probs(scores: torch.Tensor, *, temperature: float, top_p: float) -> torch.Tensor:
    """What generate(do_sample=True) samples from: its warpers in their order, then softmax."""
    warped = TemperatureLogitsWarper(temperature)(None, scores.clone())
    if top_p < 1.0:
        warped = TopPLogitsWarper(top_p)(None, warped)
    return warped.softmax(dim=-1)


def sampler_probs(sampler: NucleusSampler, scores: torch.Tensor) -> torch.Tensor:
    probs, ids = sampler.nucleus(scores)
    full = torch.zeros_like(scores).scatter_(-1, ids, probs)
    return full / full.sum(dim=-1, keepdim=True)


def some_scores(rows: int = 6, vocab: int = 3000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, vocab, generator=g) * 3.0
    scores[1] = (
        torch.randn(vocab, generator=g) * 0.05
    )  # nearly flat: the nucleus holds most of the vocabulary
    scores[2, 7] = 40.0  # one certain token
    return scores


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.6])
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("candidates", [1, 64, 256])
def test_the_distribution_is_transformers(temperature, top_p, candidates):
    scores = some_scores()
    sampler = NucleusSampler(temperature=temperature, top_p=top_p, candidates=candidates)
    expected = transformers_probs(scores, temperature=temperature, top_p=top_p)
    got = sampler_probs(sampler, scores)
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-4)
    # the same tokens are in the nucleus
    assert torch.equal(got > 0, expected > 0)


def test_a_nucleus_wider_than_the_candidates_falls_back_to_the_whole_vocabulary():
    scores = some_scores()
    sampler = NucleusSampler(temperature=1.0, top_p=0.9, candidates=16)
    probs, ids = sampler.nucleus(scores)
    assert probs.shape == ids.shape == scores.shape  # row 1's nucleus has far more than 16 tokens
    assert int((sampler_probs(sampler, scores)[1] > 0).sum()) > 1000
    assert int((sampler_probs(sampler, scores)[2] > 0).sum()) == 1


def test_each_call_draws_one_token_of_the_nucleus():
    scores = some_scores()
    sampler = NucleusSampler(temperature=0.8, top_p=0.9)
    allowed = transformers_probs(scores, temperature=0.8, top_p=0.9) > 0
    torch.manual_seed(0)
    for _ in range(50):
        out = sampler(None, scores)
        finite = torch.isfinite(out)
        assert finite.sum(dim=-1).tolist() == [1] * scores.shape[0]
        assert bool(allowed[finite].all())
        assert torch.equal(out.argmax(dim=-1), finite.int().argmax(dim=-1))  # what generate's argmax takes


def test_draws_follow_the_distribution():
    scores = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]])
    sampler = NucleusSampler(temperature=1.2, top_p=0.8)
    expected = transformers_probs(scores, temperature=1.2, top_p=0.8)[0]
    torch.manual_seed(1)
    draws = 20_000
    counts = torch.zeros(6)
    for _ in range(draws // 500):
        batch = scores.expand(500, 6)
        counts += torch.bincount(sampler(None, batch).argmax(dim=-1), minlength=6)
    freq = counts / draws
    assert torch.allclose(freq, expected, atol=0.015), (freq, expected)
    assert freq[expected == 0].sum() == 0


def test_rows_whose_nucleus_is_wider_than_the_candidates_draw_from_it_beside_narrow_ones():
    # row 0: a wide, nearly flat nucleus (whole-vocabulary path); row 1: three likely tokens
    g = torch.Generator().manual_seed(3)
    scores = torch.stack([torch.randn(40, generator=g) * 0.3, torch.full((40,), -20.0)])
    scores[1, :3] = torch.tensor([1.0, 0.5, 0.0])
    sampler = NucleusSampler(temperature=1.0, top_p=0.9, candidates=4)
    drawn: list[torch.Tensor] = []
    multinomial = torch.multinomial
    widths: list[int] = []

    def counting(probs: torch.Tensor, num_samples: int) -> torch.Tensor:
        widths.append(probs.shape[0] * probs.shape[-1])
        return multinomial(probs, num_samples)

    torch.manual_seed(2)
    draws = 12_000
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "multinomial", counting)
        for _ in range(draws // 500):
            batch = scores.repeat_interleave(500, dim=0)
            drawn.append(sampler(None, batch).argmax(dim=-1).view(2, 500))
    # only the wide rows were drawn over the whole vocabulary: 500 x 40, beside 1000 x 4 candidates
    assert sorted(set(widths)) == [1000 * 4, 500 * 40]
    expected = transformers_probs(scores, temperature=1.0, top_p=0.9)
    got = torch.cat(drawn, dim=-1)
    for row in range(2):
        freq = torch.bincount(got[row], minlength=40) / draws
        assert torch.allclose(freq, expected[row], atol=0.015), (row, freq, expected[row])
        assert freq[expected[row] == 0].sum() == 0


def test_seeded_draws_repeat():
    scores = some_scores()
    sampler = NucleusSampler(temperature=0.9, top_p=0.95)
    torch.manual_seed(5)
    a = sampler(None, scores).argmax(dim=-1)
    torch.manual_seed(5)
    b = sampler(None, scores).argmax(dim=-1)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.0, "top_p": 0.9},
        {"temperature": 1.0, "top_p": 0.0},
        {"temperature": 1.0, "top_p": 1.5},
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        NucleusSampler(**kwargs)


def test_rows_that_drew_an_end_of_sequence_id_are_not_drawn_again_in_that_call():
    sampler = NucleusSampler(temperature=1.0, top_p=0.9, candidates=16, eos_token_ids=[2])
    seen: list[int] = []
    draw = sampler._draw
    sampler._draw = lambda scores: (seen.append(scores.shape[0]), draw(scores))[1]  # type: ignore[method-assign]
    first = torch.full((3, 50), -10.0)
    first[0, 2] = first[1, 5] = first[2, 9] = 10.0  # row 0 ends (EOS), rows 1 and 2 go on
    flat = torch.zeros(3, 50)  # every token in the nucleus: the whole-vocabulary path
    ids = torch.zeros((3, 7), dtype=torch.long)
    torch.manual_seed(0)
    assert sampler(ids, first).argmax(dim=-1).tolist() == [2, 5, 9]
    out = sampler(torch.zeros((3, 8), dtype=torch.long), flat)
    assert seen == [3, 2]  # the finished row is not sampled ...
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1, 1, 1]  # ... but still gets one token
    assert int(out[0].argmax()) == 2
    # a new generate call (the ids did not grow by one token) starts with every row live again
    sampler(torch.zeros((3, 7), dtype=torch.long), flat)
    assert seen[-1] == 3
    # without end-of-sequence ids nothing is tracked
    plain = NucleusSampler(temperature=1.0, top_p=0.9)
    plain(ids, first)
    assert plain._finished is None
