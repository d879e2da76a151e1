"""Padding-free forward passes: pack a padded batch's sequences into fewer rows.

TRL 1.12's DPO, KTO, ORPO and reward trainers pad every batch to its longest sequence (DPO puts
chosen and rejected answers in one batch, so a short chosen answer is padded to the length of a
long rejected one), and TRL's own ``padding_free`` is switched off in this release. On a CPU,
where the matrix products are the whole cost of a step, every pad token costs as much as a real
one (benchmarks/padding_free.py: 1.24-1.41x faster steps on the closed loop's pairs).

:func:`enable_packing` wraps a model's ``forward``: a right- or left-padded batch
(``input_ids`` + ``attention_mask``, no cache) is packed first-fit-decreasing into rows of at
most ``max(capacity, longest sequence)`` tokens, each sequence with its own ``position_ids``
from 0, and run with no attention mask. transformers then builds a block-diagonal causal mask
from the position ids (``masking_utils.find_packed_sequence_indices``), so no token sees
another sequence. The logits are gathered back into the padded ``[batch, length, vocab]``
shape the trainer expects. At pad positions they hold some other position's logits: trainers
mask those out (and their gradient is zero), as they do with the logits of pad tokens now. A
sequence classifier (a reward model) gets the packed backbone's hidden state at each sequence's
last real token through its head: the score transformers pools for a right-padded batch.

Anything else (a cache, ``labels``, ``position_ids`` or ``logits_to_keep`` given, a mask with a
hole in a row, or a batch that packing would not shrink) goes to the original ``forward``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

#: Pack only when the packed batch has at most this share of the padded batch's token slots.
MIN_SAVING = 0.9
_PASSTHROUGH_KWARGS = ("labels", "position_ids", "logits_to_keep", "inputs_embeds", "cache_position")


@dataclass(frozen=True)
class PackPlan:
    """Where each real token of a padded batch goes in the packed batch."""

    input_ids: torch.Tensor  # [rows, width]
    position_ids: torch.Tensor  # [rows, width]
    #: for every slot of the padded batch (flattened), the flat packed slot whose logits it takes
    gather: torch.Tensor  # [batch * length]

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])


def plan_packing(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, *, capacity: int, min_saving: float = MIN_SAVING
) -> PackPlan | None:
    """Pack the rows of a padded batch, or None when packing does not apply or would not pay."""
    import torch

    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        return None
    batch, length = input_ids.shape
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    if batch == 0 or int(lengths.min()) == 0:
        return None
    # Each row's tokens must be one run (left or right padding): first..last real slot all real.
    idx = torch.arange(length, device=mask.device).expand(batch, length)
    first = torch.where(mask, idx, length).min(dim=1).values
    last = torch.where(mask, idx, -1).max(dim=1).values
    if bool((last - first + 1 != lengths).any()):
        return None
    lens = lengths.tolist()
    longest, total = max(lens), sum(lens)
    # Try row widths from the longest sequence up to ``capacity``: as many rows as needed at each
    # even split of the tokens; keep the packing with the fewest slots (rows x width).
    widths = {longest} | {-(-total // r) for r in range(1, batch + 1)}
    best: tuple[int, list[int], list[tuple[int, int]]] | None = None
    for cap in sorted(w for w in widths if longest <= w <= max(capacity, longest)):
        fill, placed = _first_fit_decreasing(lens, cap)
        slots = len(fill) * max(fill)
        if best is None or slots < best[0]:
            best = (slots, fill, placed)
    assert best is not None  # ``longest`` is always a candidate
    slots, fill, placed = best
    rows, width = len(fill), max(fill)
    if slots > min_saving * batch * length:
        return None
    packed_ids = input_ids.new_zeros(rows, width)
    positions = torch.empty(rows, width, dtype=torch.long, device=input_ids.device)
    for r, used in enumerate(fill):
        # Unused tail slots form their own segment (positions from 0): they attend to nothing real.
        positions[r, used:] = torch.arange(width - used, device=input_ids.device)
    gather = torch.zeros(batch * length, dtype=torch.long, device=input_ids.device)
    for b, (r, off) in enumerate(placed):
        n, start = lens[b], int(first[b])
        packed_ids[r, off : off + n] = input_ids[b, start : start + n]
        positions[r, off : off + n] = torch.arange(n, device=input_ids.device)
        gather[b * length + start : b * length + start + n] = torch.arange(
            r * width + off, r * width + off + n, device=input_ids.device
        )
    return PackPlan(input_ids=packed_ids, position_ids=positions, gather=gather)


def _first_fit_decreasing(lens: list[int], cap: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Rows' fill and each sequence's (row, offset): longest first, each into the first row with room."""
    fill: list[int] = []
    placed: list[tuple[int, int]] = [(0, 0)] * len(lens)
    for b in sorted(range(len(lens)), key=lambda i: -lens[i]):
        for r, used in enumerate(fill):
            if used + lens[b] <= cap:
                placed[b] = (r, used)
                fill[r] = used + lens[b]
                break
        else:
            placed[b] = (len(fill), 0)
            fill.append(lens[b])
    return fill, placed


def unpack_logits(logits: torch.Tensor, plan: PackPlan, batch: int, length: int) -> torch.Tensor:
    """The packed ``[rows, width, vocab]`` logits in the padded batch's ``[batch, length, vocab]`` shape."""
    flat = logits.reshape(plan.rows * plan.width, logits.shape[-1])
    return flat.index_select(0, plan.gather).view(batch, length, logits.shape[-1])


def _packable_inputs(args: tuple, kwargs: dict[str, Any]) -> tuple[Any, Any] | None:
    """``(input_ids, attention_mask)`` of a plain training-style call, else None."""
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    attention_mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if (
        input_ids is None
        or attention_mask is None
        or len(args) > 2
        or kwargs.get("past_key_values") is not None
        or kwargs.get("use_cache")
        or any(kwargs.get(k) is not None for k in _PASSTHROUGH_KWARGS)
    ):
        return None
    return input_ids, attention_mask


def packed_forward(forward: Callable[..., Any], *, capacity: int) -> Callable[..., Any]:
    """A causal LM's ``forward`` that packs padded training batches (see the module docstring)."""

    @functools.wraps(forward)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        inputs = _packable_inputs(args, kwargs)
        plan = None if inputs is None else plan_packing(*inputs, capacity=capacity)
        if plan is None:
            return forward(*args, **kwargs)
        rest = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "use_cache")}
        out = forward(
            input_ids=plan.input_ids,
            attention_mask=None,
            position_ids=plan.position_ids,
            use_cache=False,
            **rest,
        )
        out.logits = unpack_logits(out.logits, plan, *inputs[0].shape)
        return out

    wrapper.__arbiter_packed__ = True  # type: ignore[attr-defined]
    return wrapper


def packed_hidden_states(backbone: Any, plan: PackPlan) -> torch.Tensor:
    """A transformers backbone's last hidden states on the packed rows, flat: ``[rows * width, hidden]``,
    indexed by ``plan.gather``."""
    hidden = backbone(
        input_ids=plan.input_ids, attention_mask=None, position_ids=plan.position_ids, use_cache=False
    ).last_hidden_state
    return hidden.reshape(plan.rows * plan.width, hidden.shape[-1])


def packed_classifier_forward(model: Any, *, capacity: int) -> Callable[..., Any]:
    """A sequence classifier's (reward model's) ``forward`` that packs padded training batches.

    The backbone runs on the packed rows; the head scores each sequence's last real token, the token
    transformers pools for a right-padded batch whose pad id appears only as padding.
    """
    from transformers.modeling_outputs import SequenceClassifierOutputWithPast

    forward = model.forward
    backbone = getattr(model, model.base_model_prefix)

    @functools.wraps(forward)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        inputs = _packable_inputs(args, kwargs)
        plan = None if inputs is None else plan_packing(*inputs, capacity=capacity)
        if plan is None or kwargs.get("output_hidden_states") or kwargs.get("output_attentions"):
            return forward(*args, **kwargs)
        input_ids, attention_mask = inputs
        batch, length = input_ids.shape
        hidden = packed_hidden_states(backbone, plan)
        slots = torch.arange(length, device=input_ids.device)
        last = (slots * attention_mask.bool()).argmax(dim=1)  # each row's last real slot
        last_packed = plan.gather.view(batch, length).gather(1, last[:, None])[:, 0]
        pooled = hidden.index_select(0, last_packed)
        return SequenceClassifierOutputWithPast(logits=model.score(pooled))

    wrapper.__arbiter_packed__ = True  # type: ignore[attr-defined]
    return wrapper


def innermost_model(model: Any) -> Any:
    """The transformers model under DDP and peft wrappers (its ``forward`` is what runs)."""
    model = getattr(model, "module", model)
    get_base = getattr(model, "get_base_model", None)  # peft: base_model.model
    return get_base() if callable(get_base) else model


def enable_packing(model: Any, *, capacity: int) -> bool:
    """Wrap the transformers model's ``forward`` under ``model``; False where it is already wrapped."""
    inner = innermost_model(model)
    if getattr(inner.forward, "__arbiter_packed__", False):
        return False
    if hasattr(inner, "score") and hasattr(inner, getattr(inner, "base_model_prefix", "") or "-"):
        inner.forward = packed_classifier_forward(inner, capacity=capacity)
    else:
        inner.forward = packed_forward(inner.forward, capacity=capacity)
    return True


def pack_trainer(trainer: Any, *, capacity: int) -> None:
    """Padding-free forwards for a TRL trainer's policy and, where it has its own, reference model."""
    enable_packing(trainer.model, capacity=capacity)
    if getattr(trainer, "ref_model", None) is not None:
        enable_packing(trainer.ref_model, capacity=capacity)
