"""Embeddings: ``nn.Embedding`` / ``F.embedding`` (a lookup) and ``nn.EmbeddingBag`` / ``F.embedding_bag``.

An embedding is a table lookup: known zero (aten ``embedding`` is already known zero in
``rules/shape.py``). ``max_norm`` is not priced: it runs ``embedding_renorm_`` in place before the
lookup, which the aten-level counter reports as unsupported.

An embedding bag reduces the ``s`` rows of each bag (each of ``D`` elements) to one row:

- ``mode="sum"``: ``(s - 1) * D`` adds, 0 MACs (a sum, as ``Tensor.sum``);
- ``mode="mean"``: ``(s - 1) * D`` adds and ``D`` divides = ``s * D``; MACs equal, as ``Tensor.mean``
  and average pooling count them;
- ``mode="max"``: ``(s - 1) * D`` comparisons, 0 MACs;
- ``per_sample_weights`` (sum only): ``s * D`` multiplies more, and the bag is a weighted sum:
  ``(2s - 1) * D`` FLOPs and ``s * D`` MACs.

An empty bag costs nothing (its row is zeros). Entries equal to ``padding_idx`` are skipped by PyTorch
(they are neither added, compared nor counted in the mean's divisor), so ``s`` counts the other entries
only. Summed over all bags, with ``T`` the entries counted and ``B`` the non-empty bags, the cost is
``(T - B) * D`` (sum, max), ``T * D`` (mean) and ``(2T - B) * D`` with ``T * D`` MACs (weighted sum).

Bags: a 2-D input ``(B, s)`` is ``B`` bags of ``s``; a 1-D input with ``offsets`` has bag ``b`` from
``offsets[b]`` to ``offsets[b + 1]`` (the last bag to the end of the input), or with
``include_last_offset=True`` the ``len(offsets) - 1`` bags between consecutive offsets. The aten ops
``_embedding_bag`` / ``_embedding_bag_forward_only`` (``weight, indices, offsets, scale_grad_by_freq,
mode (0 sum, 1 mean, 2 max), sparse, per_sample_weights, include_last_offset, padding_idx``) are priced
the same way; there ``padding_idx < 0`` means no padding.

Worked example: ``nn.EmbeddingBag(10, 4, mode="mean")`` on indices ``[1, 2, 4, 5, 4, 3]`` with offsets
``[0, 2, 2]``: bags of 2, 0 and 4 entries; ``T = 6``, ``B = 2``: ``6 * 4 = 24`` FLOPs (``(6 - 2) * 4 =
16`` adds and ``2 * 4 = 8`` divides), 24 MACs. In ``mode="sum"``: 16 FLOPs, 0 MACs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torch_flops.records import ZERO_COST, Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, module_rule

MODES = ("sum", "mean", "max")  # the aten enum: 0, 1, 2


# -- shape-only formula --------------------------------------------------------------------------------
def embedding_bag_cost(entries: int, nonempty_bags: int, dim: int, mode: str, weighted: bool = False) -> Cost:
    """``entries`` rows of ``dim`` elements reduced into ``nonempty_bags`` rows.

    ``(entries - nonempty_bags) * dim`` adds (sum, mean) or comparisons (max); mean adds
    ``nonempty_bags * dim`` divides and counts its FLOPs as MACs; per-sample weights add
    ``entries * dim`` multiplies, which are also the MACs.
    """
    if mode not in MODES:
        raise ValueError(f"embedding_bag mode must be one of {MODES}, got {mode!r}")
    reduce = (entries - nonempty_bags) * dim
    if mode == "mean":
        flops = reduce + nonempty_bags * dim
        return Cost(flops, flops)
    if weighted:
        return Cost(reduce + entries * dim, entries * dim)
    return Cost(reduce, 0)


# -- reading the bags from the call --------------------------------------------------------------------
def bag_entries(
    indices: torch.Tensor,
    offsets: torch.Tensor | None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
) -> tuple[int, int]:
    """(entries counted, non-empty bags) of an embedding bag call. Entries equal to ``padding_idx``
    (``None``: no padding) are skipped, as PyTorch skips them."""
    if getattr(indices, "is_nested", False):  # F.embedding_bag turns a nested 2-D input into offsets
        offsets, indices, include_last_offset = indices.offsets(), indices.values().reshape(-1), True
    kept = indices != padding_idx if padding_idx is not None else torch.ones_like(indices, dtype=torch.bool)
    if indices.dim() == 2:  # fixed-size bags, one per row
        sizes = kept.sum(dim=1)
    else:
        if offsets is None:
            raise ValueError("a 1-D embedding bag input needs offsets")
        prefix = torch.zeros(indices.numel() + 1, dtype=torch.long, device=indices.device)
        prefix[1:] = torch.cumsum(kept.reshape(-1), dim=0)
        offsets = offsets.to(torch.long)
        if include_last_offset:
            starts, ends = offsets[:-1], offsets[1:]
        else:
            ends = torch.cat([offsets[1:], offsets.new_tensor([indices.numel()])])
            starts = offsets
        sizes = prefix[ends] - prefix[starts]
    return int(sizes.sum()), int((sizes > 0).sum())


def _embedding_bag_call_cost(
    indices: torch.Tensor,
    weight: torch.Tensor,
    offsets: torch.Tensor | None,
    mode: str,
    per_sample_weights: torch.Tensor | None,
    include_last_offset: bool,
    padding_idx: int | None,
) -> Cost:
    entries, nonempty = bag_entries(indices, offsets, include_last_offset, padding_idx)
    return embedding_bag_cost(entries, nonempty, weight.shape[-1], mode, per_sample_weights is not None)


# -- adapters ------------------------------------------------------------------------------------------
# [*, D] = nn.Embedding(num, D)([*]); F.embedding(input, weight, padding_idx=None, max_norm=None, ...);
# torch.embedding(weight, input, ...)
@module_rule(nn.Embedding, known_zero=True)
@function_rule(F.embedding, torch.embedding, known_zero=True)
def embedding_lookup(call: OpCall) -> Cost:
    """Known zero: a table lookup."""
    return ZERO_COST


def _functional_padding_idx(padding_idx: int | None, num_embeddings: int) -> int | None:
    """``F.embedding_bag``'s ``padding_idx``: ``None`` for none, a negative index counts from the end."""
    if padding_idx is None:
        return None
    return padding_idx + num_embeddings if padding_idx < 0 else padding_idx


# [B, D] = F.embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False,
#                          mode="mean", sparse=False, per_sample_weights=None, include_last_offset=False,
#                          padding_idx=None)
@function_rule(F.embedding_bag)
def embedding_bag_function(call: OpCall) -> Cost:
    indices, weight = call.arg(0, "input"), call.arg(1, "weight")
    if weight.dtype == torch.long and indices.is_floating_point():  # the deprecated (weight, input) order
        indices, weight = weight, indices
    return _embedding_bag_call_cost(
        indices,
        weight,
        call.arg(2, "offsets", None),
        call.arg(6, "mode", "mean"),
        call.arg(8, "per_sample_weights", None),
        call.arg(9, "include_last_offset", False),
        _functional_padding_idx(call.arg(10, "padding_idx", None), weight.shape[0]),
    )


# [B, D] = nn.EmbeddingBag(num, D, mode=...)(input, offsets=None, per_sample_weights=None)
@module_rule(nn.EmbeddingBag)
def embedding_bag_module(call: OpCall) -> Cost:
    module: Any = call.module
    return _embedding_bag_call_cost(
        call.arg(0, "input"),
        module.weight,
        call.arg(1, "offsets", None),
        module.mode,
        call.arg(2, "per_sample_weights", None),
        module.include_last_offset,
        module.padding_idx,  # already normalised to [0, num_embeddings) or None by the module
    )


# (out [B, D], offset2bag, bag_size, max_indices) = _embedding_bag(weight, indices, offsets,
#     scale_grad_by_freq=False, mode=0, sparse=False, per_sample_weights=None, include_last_offset=False,
#     padding_idx=-1)
@aten_rule(*aten_ops("_embedding_bag", "_embedding_bag_forward_only"))
def embedding_bag_aten(call: OpCall) -> Cost:
    padding_idx = call.arg(8, "padding_idx", -1)
    return _embedding_bag_call_cost(
        call.arg(1, "indices"),
        call.arg(0, "weight"),
        call.arg(2, "offsets"),
        MODES[call.arg(4, "mode", 0)],
        call.arg(6, "per_sample_weights", None),
        call.arg(7, "include_last_offset", False),
        padding_idx if padding_idx is not None and padding_idx >= 0 else None,
    )
