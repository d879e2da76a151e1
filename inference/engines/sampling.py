"""Temperature + nucleus (top-p) sampling as one logits processor, for ``generate(do_sample=False)``.

transformers samples by sorting the whole vocabulary for top-p on every step (``TopPLogitsWarper``) and then
drawing with ``torch.multinomial`` over the whole vocabulary again. On the CPU, with SmolLM2's 49,152 tokens
and 64 rows, those two cost more than a third of a step: measured with torch's profiler, 48 steps of the demo
model at batch 64 spent 9.0 s in ``sort``, 3.8 s in ``exponential_`` (multinomial's draw), 1.1 s in
``cumsum`` against 16.4 s in the model's matrix products (2026-12-03).

:class:`NucleusSampler` draws from the same distribution (temperature, then the smallest set of most likely
tokens whose probability reaches ``top_p``; the most likely token always stays) but looks at the ``candidates``
most likely tokens only, found with ``topk``: the nucleus nearly always lies among them. A row whose nucleus
does not (their probability adds up to less than ``top_p``) is done over the whole vocabulary, so the result
is exact either way. It returns scores in which only the drawn token is finite: with ``do_sample=False``,
``generate`` takes it with its argmax, and seeding torch seeds the draw.

Given the end-of-sequence ids, it also skips the rows that already drew one in this ``generate`` call:
transformers pads them from then on whatever is drawn, and their scores (the model reading its own padding)
are nearly flat, so each of them would take the whole-vocabulary path on every step. A batch of 64 short
answers from a model trained towards them spent most of its time there (a round-2 candidate job of the
closed loop, 2026-12-06: 32-74 tokens/s against 190-240 for the base's long answers). Measured with
``benchmarks/sampling.py --ending --max-new-tokens 128 --dtype bfloat16`` (64 rows, 2 cores): that round's
DPO version 44.4 s without the ids, 22.6 s with them (1.96x); the demo model, whose answers mostly run on,
22.3 s and 20.5 s.

Only the rows whose nucleus reaches past the candidates are drawn over the whole vocabulary; the rest of the
batch draws from its candidates. Until 2026-12-06 one such row sent every row of the batch there: the profiler
showed ``exponential_`` (multinomial's draw) over 64 x 49,152 probabilities at 66 ms a step, a fifth of the
demo model's sampling time, on over half the steps. The same ``--ending`` run on the demo model: 251 tokens/s
before, 302 after.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: how many of the most likely tokens the nucleus is looked for among before the whole vocabulary is
DEFAULT_CANDIDATES = 256


class NucleusSampler:
    """A transformers logits processor (called with ``input_ids, scores``) that draws the next token."""

    def __init__(
        self,
        *,
        temperature: float,
        top_p: float,
        candidates: int = DEFAULT_CANDIDATES,
        eos_token_ids: Sequence[int] = (),
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 to sample, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.candidates = candidates
        self.eos_token_ids = tuple(sorted({int(t) for t in eos_token_ids}))
        self._eos = torch.tensor(self.eos_token_ids, dtype=torch.long)
        #: rows that drew an end-of-sequence id earlier in this generate call, and the length of the ids then
        self._finished: torch.Tensor | None = None
        self._length = -1

    def nucleus(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, token ids), each (rows, k): the tempered distribution's probabilities inside each
        row's nucleus, 0 outside it (not renormalised); the candidates most likely first, or, where a row's
        nucleus reached past them, every token of the vocabulary in id order."""
        probs, ids, wide_rows, wide_probs = self._nuclei(scores)
        if wide_rows is None:
            return probs, ids
        vocab = scores.shape[-1]
        wide = probs.new_zeros(scores.shape[0], vocab).scatter_(-1, ids, probs)
        wide[wide_rows] = wide_probs
        return wide, torch.arange(vocab, device=scores.device).expand(scores.shape[0], vocab)

    def _nuclei(
        self, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(probs, ids, wide rows, wide probs): each row's nucleus among its ``candidates`` most likely tokens
        ((rows, k) probabilities, 0 outside the nucleus, and their token ids); then the rows whose nucleus
        reaches past the candidates (None if none) with their nucleus over the whole vocabulary, in id order
        ((wide rows, vocab)). Those rows' entries in the first two are not their nucleus."""
        scores = scores.float() / self.temperature
        vocab = scores.shape[-1]
        log_z = torch.logsumexp(scores, dim=-1, keepdim=True)
        if self.top_p >= 1.0:
            ids = torch.arange(vocab, device=scores.device).expand(scores.shape[0], vocab)
            return (scores - log_z).exp(), ids, None, None
        top, ids = scores.topk(min(self.candidates, vocab), dim=-1)
        probs, keep = self._keep(top, log_z)
        # The nucleus may reach past the candidates only where their probability adds up to less than top_p.
        short = (probs.sum(dim=-1) < self.top_p) & (top.shape[-1] < vocab)
        probs = probs.masked_fill(~keep, 0.0)
        if not bool(short.any()):
            return probs, ids, None, None
        rows = short.nonzero().squeeze(-1)  # sorted over the whole vocabulary: these rows only
        all_top, all_ids = scores[rows].sort(dim=-1, descending=True)
        all_probs, all_keep = self._keep(all_top, log_z[rows])
        wide = torch.zeros_like(all_probs).scatter_(-1, all_ids, all_probs.masked_fill(~all_keep, 0.0))
        return probs, ids, rows, wide

    def _keep(self, top: torch.Tensor, log_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities of tokens sorted most likely first, and which are in the nucleus: a token is when the
        tokens before it hold less than top_p (transformers' rule, read from the other end: it drops a token
        when it and every less likely token hold at most 1 - top_p); the first always is."""
        probs = (top - log_z).exp()
        before = probs.cumsum(dim=-1) - probs
        keep = before < self.top_p
        keep[:, 0] = True
        return probs, keep

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.Tensor) -> torch.Tensor:
        finished = self._finished_rows(input_ids, scores.shape[0])
        if finished is None or not bool(finished.any()):
            drawn = self._draw(scores)
        else:  # a finished row gets an end-of-sequence id, which generate replaces with padding
            drawn = torch.full(
                (scores.shape[0], 1), self.eos_token_ids[0], dtype=torch.long, device=scores.device
            )
            live = (~finished).nonzero().squeeze(-1)
            if live.numel():
                drawn[live] = self._draw(scores[live])
        if self.eos_token_ids:
            ended = torch.isin(drawn.squeeze(-1), self._eos.to(drawn.device))
            self._finished = ended if finished is None else finished | ended
        out = torch.full_like(scores, -float("inf"))
        return out.scatter_(-1, drawn, 0.0)

    def _draw(self, scores: torch.Tensor) -> torch.Tensor:
        """One token id per row, drawn from its nucleus: shape (rows, 1)."""
        probs, ids, wide_rows, wide_probs = self._nuclei(scores)
        drawn = ids.gather(-1, torch.multinomial(probs, num_samples=1))
        if wide_rows is not None:  # drawn again over the whole vocabulary, those rows alone
            drawn[wide_rows] = torch.multinomial(wide_probs, num_samples=1)
        return drawn

    def _finished_rows(self, input_ids: torch.LongTensor | None, rows: int) -> torch.Tensor | None:
        """The rows that drew an end-of-sequence id on an earlier step of this generate call, or None (no
        end-of-sequence ids given, or a new call: other rows, or ids that did not grow by one token)."""
        length = -1 if input_ids is None else int(input_ids.shape[-1])
        same_call = (
            self._finished is not None
            and self._finished.shape[0] == rows
            and (length < 0 or length == self._length + 1)
        )
        self._length = length
        return self._finished if same_call else None


def sampling_kwargs(*, temperature: float, top_p: float, **extra: Any) -> dict[str, Any]:
    """``generate`` arguments that sample through :class:`NucleusSampler` (greedy decoding over its scores)."""
    return {
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "logits_processor": [NucleusSampler(temperature=temperature, top_p=top_p, **extra)],
    }
