"""Softmax and reductions, in their module, function, method and aten forms.

Per row (softmax) or per output (reductions) of ``n = in_numel / out_numel`` values (``keepdim`` does
not change the count):

- softmax: ``n`` exps, ``n - 1`` adds, ``n`` divides: ``rows * (3n - 1)``;
- log_softmax: ``n`` exps, ``n - 1`` adds, 1 log, ``n`` subtracts: ``rows * 3n``;
- softmin: a negation per element, then softmax: ``numel + rows * (3n - 1)``;
- sum, prod, any, all: ``n - 1``; max, min, amax, amin, argmax, argmin: ``n - 1`` comparisons;
  aminmax: ``2 (n - 1)``;
- mean: ``n - 1`` adds and a divide, ``n``; MACs equal (an average, as average pooling);
- var: mean ``n``, subtract ``n``, square ``n``, sum ``n - 1``, divide 1: ``4n``; std: ``4n + 1``
  (the sqrt); ``var_mean`` / ``std_mean`` the same (the mean is shared);
- vector norm of order ``p``: 2: ``2n`` (squares, adds, sqrt); 1, inf, -inf, 0: ``2n - 1`` (abs or
  compare, then adds or comparisons); any other ``p``: ``3n`` (abs, power, adds, root);
- logsumexp: ``2n`` (exps, adds, log);
- cumsum / cumprod / logcumsumexp / cummax / cummin along a dimension of size ``n``: ``n - 1`` per line,
  ``in_numel - lines``.
- histc: per value a subtract, a multiply (its bin) and an add to the bin's count, ``3 numel``, and
  ``2 (numel - 1)`` comparisons more when the range is the data's own (``min == max``);
- bincount: the largest value and an add per value, ``2 numel - 1``.

Worked examples: softmax over the last dim of ``(1, 12, 197, 197)``: 2,364 rows * (3*197 - 1)
= 1,394,760 FLOPs. ``x.sum()`` of 10 elements: 9 FLOPs; ``x.var(-1)`` of ``(3, 4)``: 3 * 16 = 48.
Only mean costs MACs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torch_flops.records import Cost
from torch_flops.registry import (
    OpCall,
    aten_ops,
    aten_rule,
    first_output,
    function_rule,
    method_rule,
    module_rule,
    numel,
)
from torch_flops.rules.elementwise import elementwise_cost


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
    """``out_numel * n``: the sum's ``n - 1`` adds and one divide per output; MACs equal."""
    if in_numel == 0 or out_numel == 0:
        return Cost(0, 0)
    return Cost(in_numel, in_numel)


def log_softmax_cost(numel_: int, dim_size: int) -> Cost:
    """``rows * 3n``: n exps, n - 1 adds, 1 log and n subtracts per row."""
    if numel_ == 0 or dim_size == 0:
        return Cost(0, 0)
    return Cost(numel_ // dim_size * 3 * dim_size, 0)


def var_cost(in_numel: int, out_numel: int, sqrt: bool) -> Cost:
    """``4n`` per output (mean, subtract, square, sum, divide), ``+ 1`` for std's sqrt."""
    if in_numel == 0 or out_numel == 0:
        return Cost(0, 0)
    return Cost(4 * in_numel + (out_numel if sqrt else 0), 0)


def vector_norm_cost(in_numel: int, out_numel: int, p: object) -> Cost:
    """Order 2 (or ``'fro'``): ``2n``; 1, inf, -inf, 0: ``2n - 1``; other ``p``: ``3n`` per output."""
    if in_numel == 0 or out_numel == 0:
        return Cost(0, 0)
    if p is None or p == 2 or p == "fro":
        return Cost(2 * in_numel, 0)
    if p in (1, 0, math.inf, -math.inf, "inf", "-inf"):
        return Cost(2 * in_numel - out_numel, 0)
    return Cost(3 * in_numel, 0)


def scan_cost(in_numel: int, dim_size: int) -> Cost:
    """cumsum / cumprod: ``n - 1`` per line of ``n = dim_size``: ``in_numel - lines``."""
    if in_numel == 0 or dim_size == 0:
        return Cost(0, 0)
    return Cost(in_numel - in_numel // dim_size, 0)


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
# aten: _softmax(self, dim, half_to_float), _safe_softmax(self, dim, dtype), softmax.int(self, dim)
@function_rule(F.softmax, torch.softmax)
@method_rule("softmax")
@aten_rule(*aten_ops("softmax", "_softmax", "_safe_softmax"))
def softmax(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return softmax_cost(input_.numel(), _softmax_dim_size(input_, call.arg(1, "dim", None)))


@module_rule(nn.LogSoftmax)
def log_softmax_module(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return log_softmax_cost(input_.numel(), _softmax_dim_size(input_, call.module.dim))


# [*] = log_softmax([*], dim); aten: _log_softmax(self, dim, half_to_float)
@function_rule(F.log_softmax, torch.log_softmax)
@method_rule("log_softmax")
@aten_rule(*aten_ops("log_softmax", "_log_softmax"))
def log_softmax(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return log_softmax_cost(input_.numel(), _softmax_dim_size(input_, call.arg(1, "dim", None)))


@module_rule(nn.Softmin)
def softmin_module(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return elementwise_cost(input_.numel()) + softmax_cost(input_.numel(), _softmax_dim_size(input_, call.module.dim))


# [*] = F.softmin([*], dim): -x, then softmax
@function_rule(F.softmin)
def softmin(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    dim_size = _softmax_dim_size(input_, call.arg(1, "dim", None))
    return elementwise_cost(input_.numel()) + softmax_cost(input_.numel(), dim_size)


def _in_out(call: OpCall) -> tuple[int, int]:
    return call.arg(0, "input").numel(), numel(first_output(call.output))


# [reduced] = sum / prod / any / all([*], dim=None, keepdim=False)
@function_rule(torch.sum, torch.nansum, torch.prod, torch.any, torch.all)
@method_rule("sum", "nansum", "prod", "any", "all")
@aten_rule(*aten_ops("sum", "nansum", "prod", "any", "all"))
def sum_(call: OpCall) -> Cost:
    return sum_cost(*_in_out(call))


# [reduced] = mean([*], dim=None, keepdim=False)
@function_rule(torch.mean, torch.nanmean)
@method_rule("mean", "nanmean")
@aten_rule(*aten_ops("mean", "nanmean"))
def mean(call: OpCall) -> Cost:
    return mean_cost(*_in_out(call))


# [reduced] | (values, indices) = max / min([*], dim=None, keepdim=False); amax, amin, argmax, argmin.
# max(a, b) / min(a, b) of two tensors is elementwise: out_numel.
@function_rule(torch.max, torch.min, torch.amax, torch.amin, torch.argmax, torch.argmin)
@method_rule("max", "min", "amax", "amin", "argmax", "argmin")
@aten_rule(*aten_ops("max", "min", "amax", "amin", "argmax", "argmin"))
def max_(call: OpCall) -> Cost:
    if isinstance(call.arg(1, "other", None), torch.Tensor):
        return elementwise_cost(numel(call.output))
    return sum_cost(*_in_out(call))


# (min, max) = aminmax([*], dim=None, keepdim=False): both reductions
@function_rule(torch.aminmax)
@method_rule("aminmax")
@aten_rule(*aten_ops("aminmax", "_aminmax"))
def aminmax(call: OpCall) -> Cost:
    """``2 * out_numel * (n - 1)`` comparisons."""
    cost = sum_cost(*_in_out(call))
    return cost + cost


# [reduced] = var / std([*], dim=None, *, correction=1, keepdim=False); (var, mean) = var_mean(...)
@function_rule(torch.var, torch.var_mean)
@method_rule("var")
@aten_rule(*aten_ops("var", "var_mean"))
def var(call: OpCall) -> Cost:
    return var_cost(*_in_out(call), sqrt=False)


@function_rule(torch.std, torch.std_mean)
@method_rule("std")
@aten_rule(*aten_ops("std", "std_mean"))
def std(call: OpCall) -> Cost:
    return var_cost(*_in_out(call), sqrt=True)


# [reduced] = norm([*], p='fro', dim=None); linalg.vector_norm([*], ord=2, dim=None); aten: the same order
@function_rule(torch.norm, torch.linalg.vector_norm)
@method_rule("norm")
@aten_rule(*aten_ops("norm", "linalg_vector_norm"))
def norm(call: OpCall) -> Cost:
    p = call.arg(1, "ord" if "ord" in call.kwargs else "p", 2)
    return vector_norm_cost(*_in_out(call), p)


def weight_norm_cost(v_numel: int, g_numel: int) -> Cost:
    """``w = v * (g / ||v||)``, the norm of order 2 taken over every dimension but ``dim``: the norms
    ``2 * v_numel``, ``g / norm`` one divide per norm, ``v * ...`` one multiply per element:
    ``3 * v_numel + g_numel``."""
    if v_numel == 0:
        return Cost(0, 0)
    return Cost(3 * v_numel + g_numel, 0)


# [*v] = _weight_norm([*v], g, dim); aten: _weight_norm_interface -> (w, norms)
@function_rule(torch._weight_norm)
@aten_rule(*aten_ops("_weight_norm", "_weight_norm_interface"))
def weight_norm(call: OpCall) -> Cost:
    return weight_norm_cost(call.arg(0, "v").numel(), call.arg(1, "g").numel())


# [reduced] = logsumexp([*], dim, keepdim=False)
@function_rule(torch.logsumexp)
@method_rule("logsumexp")
@aten_rule(*aten_ops("logsumexp"))
def logsumexp(call: OpCall) -> Cost:
    in_numel, out_numel = _in_out(call)
    return Cost(2 * in_numel if out_numel else 0, 0)


# [*] = cumsum / cumprod / logcumsumexp([*], dim); (values, indices) = cummax / cummin([*], dim): one
# add, multiply, log-add-exp or compare per element after each line's first
@function_rule(torch.cumsum, torch.cumprod, torch.logcumsumexp, torch.cummax, torch.cummin)
@method_rule("cumsum", "cumsum_", "cumprod", "cumprod_", "logcumsumexp", "cummax", "cummin")
@aten_rule(*aten_ops("cumsum", "cumsum_", "cumprod", "cumprod_", "logcumsumexp", "cummax", "cummin"))
def cumsum(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    dim_size = input_.shape[call.arg(1, "dim")] if input_.dim() else 1
    return scan_cost(input_.numel(), dim_size)


def histc_cost(numel_: int, own_range: bool) -> Cost:
    """``3 * numel``: per value a subtract and a multiply (its bin) and an add to that bin's count;
    with ``min == max`` (the default) the range is the data's own, ``+ 2 (numel - 1)`` comparisons."""
    if numel_ == 0:
        return Cost(0, 0)
    return Cost(3 * numel_ + (2 * (numel_ - 1) if own_range else 0), 0)


# histc(input, bins=100, min=0, max=0)
@function_rule(torch.histc)
@method_rule("histc")
@aten_rule(*aten_ops("histc"))
def histc(call: OpCall) -> Cost:
    return histc_cost(call.arg(0, "input").numel(), call.arg(2, "min", 0) == call.arg(3, "max", 0))


# bincount(input, weights=None, minlength=0)
@function_rule(torch.bincount)
@method_rule("bincount")
@aten_rule(*aten_ops("bincount"))
def bincount(call: OpCall) -> Cost:
    """``2 * numel - 1``: the largest value (``numel - 1`` comparisons), then an add per value to its
    count (of its weight, with ``weights``)."""
    n = call.arg(0, "input").numel()
    return Cost(2 * n - 1 if n else 0, 0)
