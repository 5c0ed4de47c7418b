"""Softmax and reductions.

- softmax over a dimension of size ``n``: per row ``n`` exps, ``n - 1`` adds and ``n`` divides, so
  ``rows * (3n - 1)`` FLOPs with ``rows = numel / n``.
- sum of ``n`` values: ``n - 1`` adds per output; mean: ``n - 1`` adds and 1 divide, ``n`` per output.
  ``n = in_numel / out_numel`` (``keepdim`` does not change the count).

Worked example: softmax over the last dim of ``(1, 12, 197, 197)``: 2,364 rows * (3*197 - 1)
= 1,394,760 FLOPs. ``x.sum()`` of 10 elements: 9 FLOPs.
Softmax and reductions cost no MACs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torch_flops.records import Cost
from torch_flops.registry import OpCall, function_rule, method_rule, module_rule, numel


def softmax_cost(numel_: int, dim_size: int) -> Cost:
    """``rows * (3n - 1)``: n exps, n - 1 adds, n divides per row of ``n = dim_size`` values."""
    if numel_ == 0 or dim_size == 0:
        return Cost(0, 0)
    rows = numel_ // dim_size
    return Cost(rows * (3 * dim_size - 1), 0)


def sum_cost(in_numel: int, out_numel: int) -> Cost:
    """``out_numel * (n - 1)`` adds, ``n = in_numel / out_numel``."""
    if in_numel == 0 or out_numel == 0:
        return Cost(0, 0)
    return Cost(out_numel * (in_numel // out_numel - 1), 0)


def mean_cost(in_numel: int, out_numel: int) -> Cost:
    """``out_numel * n``: the sum's ``n - 1`` adds and one divide per output."""
    if in_numel == 0 or out_numel == 0:
        return Cost(0, 0)
    return Cost(in_numel, 0)


def _softmax_dim_size(input_: torch.Tensor, dim: int | None) -> int:
    if input_.dim() == 0:
        return 1
    if dim is None:  # legacy implicit dim, as torch.nn.functional._get_softmax_dim
        dim = 0 if input_.dim() in (0, 1, 3) else 1
    return input_.shape[dim]


@module_rule(nn.Softmax)
def softmax_module(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return softmax_cost(input_.numel(), _softmax_dim_size(input_, call.module.dim))


# [*] = softmax([*], dim); the same for F.softmax, torch.softmax and Tensor.softmax
@function_rule(F.softmax, torch.softmax)
@method_rule("softmax")
def softmax(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return softmax_cost(input_.numel(), _softmax_dim_size(input_, call.arg(1, "dim", None)))


# [reduced] = sum([*], dim=None, keepdim=False)
@function_rule(torch.sum)
@method_rule("sum")
def sum_(call: OpCall) -> Cost:
    return sum_cost(call.arg(0, "input").numel(), numel(call.output))


# [reduced] = mean([*], dim=None, keepdim=False)
@function_rule(torch.mean)
@method_rule("mean")
def mean(call: OpCall) -> Cost:
    return mean_cost(call.arg(0, "input").numel(), numel(call.output))
