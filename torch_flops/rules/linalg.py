"""Pairwise distances, cross products and traces.

- ``cdist(x1 [B, P, M], x2 [B, R, M], p)``, per pair of rows, as PyTorch's kernel computes it: ``M``
  differences, ``M`` maps (abs, square, compare or power), ``M - 1`` adds (or maxes), then the root:
  ``3M - 1`` for ``p`` 0, 1 and inf, ``3M`` for 2 (a sqrt), ``4M`` for any other ``p`` (abs and power,
  then a root). For ``p = 2`` with more than 25 rows on either side (``compute_mode`` by default; or
  ``"use_mm_for_euclid_dist"``) PyTorch takes the product route instead (``_euclidean_dist``): squared norms of both sides
  (``P * (2M - 1) + R * (2M - 1)``), ``x1 * -2`` (``P * M``), one ``[P, M+2] @ [M+2, R]`` product
  (``P * R * (2M + 3)``, with ``P * R * (M + 2)`` MACs), then a clamp and a sqrt per pair.
- the gradient of ``x1`` (``_cdist_backward(grad, x1, x2, p, dist)``), per pair and feature: the
  difference, its factor, the product with the pair's gradient and the add into ``x1``'s: 4 for ``p``
  1 and 2 (``sign(d)``, ``d / dist``), 6 for inf (``|d| == dist`` too), 7 for other ``p``
  (``d * |d|^(p-2) / dist^(p-1)``, the power per pair apart); 0 for ``p = 0``, whose gradient is 0.
- ``cross(a, b)`` of 3-vectors: 6 multiplies and 3 subtracts per vector, ``3 * out_numel``.
- ``trace`` of an ``n x m`` matrix: ``min(n, m) - 1`` adds.

Worked example: ``torch.cdist`` of ``(2, 10, 5)`` and ``(2, 20, 5)`` rows: ``2 * 10 * 20 * 15 = 6,000``
FLOPs; of ``(30, 5)`` and ``(40, 5)``: ``30 * 40 * 13 + 30 * 9 + 40 * 9 + 30 * 5 + 2 * 30 * 40 = 18,780``.
"""

from __future__ import annotations

import math

import torch

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, method_rule, numel

_MM_MODES = {None: 0, 0: 0, 1: 1, 2: 2, "use_mm_for_euclid_dist_if_necessary": 0, "use_mm_for_euclid_dist": 1,
             "donot_use_mm_for_euclid_dist": 2}  # torch.cdist's names for aten's compute_mode


def cdist_cost(batch: int, rows1: int, rows2: int, features: int, p: float, compute_mode: int = 0) -> Cost:
    """Distances between ``rows1`` and ``rows2`` rows of ``features`` values, ``batch`` times (see the
    module docstring for the two routes)."""
    pairs = batch * rows1 * rows2
    if pairs == 0:
        return Cost(0, 0)
    product_route = p == 2 and (compute_mode == 1 or compute_mode == 0 and (rows1 > 25 or rows2 > 25))
    if product_route:
        norms = batch * (rows1 + rows2) * (2 * features - 1)
        product = pairs * (2 * (features + 2) - 1)
        return Cost(norms + batch * rows1 * features + product + 2 * pairs, pairs * (features + 2))
    if features == 0:
        return Cost(0, 0)
    per_pair = 3 * features - 1 if p in (0, 1, math.inf) else 3 * features if p == 2 else 4 * features
    return Cost(pairs * per_pair, 0)


# [B, P, R] = cdist(x1 [B, P, M], x2 [B, R, M], p=2.0, compute_mode=None); aten: _cdist_forward(x1, x2, p, compute_mode)
@function_rule(torch.cdist)
@aten_rule(*aten_ops("_cdist_forward"))
def cdist(call: OpCall) -> Cost:
    x1, x2 = call.arg(0, "x1"), call.arg(1, "x2")
    p = float(call.arg(2, "p", 2.0))
    mode = _MM_MODES.get(call.arg(3, "compute_mode", None), 0)
    return cdist_cost(math.prod(x1.shape[:-2]), x1.shape[-2], x2.shape[-2], x1.shape[-1], p, mode)


def cdist_backward_cost(batch: int, rows1: int, rows2: int, features: int, p: float) -> Cost:
    """The gradient of ``x1`` of a distance computed the direct way (see the module docstring)."""
    pairs = batch * rows1 * rows2
    if p == 0 or pairs * features == 0:
        return Cost(0, 0)
    if p in (1, 2):
        return Cost(4 * pairs * features, 0)
    if p == math.inf:
        return Cost(6 * pairs * features, 0)
    return Cost(7 * pairs * features + pairs, 0)


# grad_x1 [B, P, M] = _cdist_backward(grad [B, P, R], x1 [B, P, M], x2 [B, R, M], p, cdist [B, P, R])
@aten_rule(*aten_ops("_cdist_backward"))
def cdist_backward(call: OpCall) -> Cost:
    x1, x2 = call.args[1], call.args[2]
    return cdist_backward_cost(math.prod(x1.shape[:-2]), x1.shape[-2], x2.shape[-2], x1.shape[-1], float(call.args[3]))


# the product route on its own, when autograd records it: [B, P, R] = _euclidean_dist(x1 [B, P, M], x2 [B, R, M])
@aten_rule(*aten_ops("_euclidean_dist"))
def euclidean_dist(call: OpCall) -> Cost:
    x1, x2 = call.args[0], call.args[1]
    return cdist_cost(math.prod(x1.shape[:-2]), x1.shape[-2], x2.shape[-2], x1.shape[-1], 2.0, compute_mode=1)


# cross(input, other, dim) of 3-vectors along dim
@function_rule(torch.cross, torch.linalg.cross)
@method_rule("cross")
@aten_rule(*aten_ops("linalg_cross", "cross"))
def cross(call: OpCall) -> Cost:
    return Cost(3 * numel(call.output), 0)


@function_rule(torch.trace)
@method_rule("trace")
@aten_rule(*aten_ops("trace"))
def trace(call: OpCall) -> Cost:
    n = min(call.arg(0, "input").shape)
    return Cost(max(n - 1, 0), 0)
