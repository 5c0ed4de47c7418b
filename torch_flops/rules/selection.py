"""Sorting and selection: comparisons, priced by the classical comparison-sort bounds.

Along a dimension of ``n`` values, with ``lines = numel / n`` independent lines:

- sort, argsort, msort: ``lines * (n - 1) * ceil(log2 n)`` comparisons (a merge sort's bound);
- topk(k): ``lines * (n - 1) * max(1, ceil(log2 k))`` (a heap of ``k``: ``k = 1`` is a max, ``n - 1``);
- kthvalue, median, nanmedian, mode (along a dim): ``lines * (n - 1) * max(1, ceil(log2 n))`` (sorting
  the line; a full median without ``dim`` is one line of ``numel``);
- unique: a sort of all ``numel`` values plus ``numel - 1`` neighbour comparisons; unique_consecutive:
  the comparisons only;
- bucketize / searchsorted: a binary search per value, ``numel * ceil(log2(boundaries + 1))``.

The actual comparisons a kernel makes depend on the data; the bound does not. 0 MACs.

Worked example: ``x.topk(5, dim=-1)`` of ``(2, 100)``: 2 lines * 99 * ceil(log2 5) = 2 * 99 * 3 = 594.
"""

from __future__ import annotations

import math

import torch

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, method_rule, numel


def _log2_ceil(value: int) -> int:
    return max(1, math.ceil(math.log2(value))) if value > 1 else 1


def sort_cost(numel_: int, n: int) -> Cost:
    """``lines * (n - 1) * ceil(log2 n)``."""
    if numel_ == 0 or n <= 1:
        return Cost(0, 0)
    return Cost(numel_ // n * (n - 1) * _log2_ceil(n), 0)


def topk_cost(numel_: int, n: int, k: int) -> Cost:
    """``lines * (n - 1) * max(1, ceil(log2 k))``."""
    if numel_ == 0 or n <= 1 or k == 0:
        return Cost(0, 0)
    return Cost(numel_ // n * (n - 1) * _log2_ceil(k), 0)


def _dim_size(input_: torch.Tensor, dim: int | None) -> int:
    if dim is None:
        return input_.numel()
    return input_.shape[dim] if input_.dim() else 1


# (values, indices) = sort(input, dim=-1, descending=False, stable=False); argsort, msort (dim 0)
@function_rule(torch.sort, torch.argsort)
@method_rule("sort", "argsort")
@aten_rule(*aten_ops("sort", "argsort"))
def sort(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    dim = call.kwargs.get("dim", next((a for a in call.args[1:] if isinstance(a, int) and not isinstance(a, bool)), -1))
    return sort_cost(input_.numel(), _dim_size(input_, dim))


@function_rule(torch.msort)
@method_rule("msort")
@aten_rule(*aten_ops("msort"))
def msort(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return sort_cost(input_.numel(), _dim_size(input_, 0))


# (values, indices) = topk(input, k, dim=-1, largest=True, sorted=True)
@function_rule(torch.topk)
@method_rule("topk")
@aten_rule(*aten_ops("topk"))
def topk(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return topk_cost(input_.numel(), _dim_size(input_, call.arg(2, "dim", -1)), int(call.arg(1, "k")))


# kthvalue(input, k, dim=-1); median / nanmedian / mode(input, dim=None | -1)
@function_rule(torch.kthvalue)
@method_rule("kthvalue")
@aten_rule(*aten_ops("kthvalue"))
def kthvalue(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return sort_cost(input_.numel(), _dim_size(input_, call.arg(2, "dim", -1)))


@function_rule(torch.median, torch.nanmedian)
@method_rule("median", "nanmedian")
@aten_rule(*aten_ops("median", "nanmedian"))
def median(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return sort_cost(input_.numel(), _dim_size(input_, call.arg(1, "dim", None)))


@function_rule(torch.mode)
@method_rule("mode")
@aten_rule(*aten_ops("mode"))
def mode(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return sort_cost(input_.numel(), _dim_size(input_, call.arg(1, "dim", -1)))


def unique_cost(numel_: int, sorted_: bool) -> Cost:
    """unique: a sort (unless the input is known sorted) and ``n - 1`` neighbour comparisons."""
    if numel_ <= 1:
        return Cost(0, 0)
    return (sort_cost(numel_, numel_) if not sorted_ else Cost(0, 0)) + Cost(numel_ - 1, 0)


# unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None); aten: _unique2, unique_dim
@function_rule(torch.unique)
@method_rule("unique")
@aten_rule(*aten_ops("_unique", "_unique2", "unique_dim"))
def unique(call: OpCall) -> Cost:
    return unique_cost(call.arg(0, "input").numel(), sorted_=False)


# unique_consecutive(input, ...): only the neighbour comparisons
@function_rule(torch.unique_consecutive)
@method_rule("unique_consecutive")
@aten_rule(*aten_ops("unique_consecutive"))
def unique_consecutive(call: OpCall) -> Cost:
    return unique_cost(call.arg(0, "input").numel(), sorted_=True)


# bucketize(input, boundaries); searchsorted(sorted_sequence, input): a binary search per value
@function_rule(torch.bucketize)
@aten_rule(*aten_ops("bucketize"))
def bucketize(call: OpCall) -> Cost:
    """``numel(input) * ceil(log2(len(boundaries) + 1))`` comparisons."""
    values, boundaries = call.arg(0, "input"), call.arg(1, "boundaries")
    return Cost(numel(values) * _log2_ceil(boundaries.shape[-1] + 1), 0)


@function_rule(torch.searchsorted)
@aten_rule(*aten_ops("searchsorted"))
def searchsorted(call: OpCall) -> Cost:
    sequence, values = call.arg(0, "sorted_sequence"), call.arg(1, "input")
    return Cost(numel(values) * _log2_ceil(sequence.shape[-1] + 1), 0)
