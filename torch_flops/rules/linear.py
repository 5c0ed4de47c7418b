"""Linear layers and the matmul family.

A dot product of length ``k`` costs ``k`` multiplies and ``k - 1`` adds, so a product with ``out_numel``
outputs costs ``out_numel * (2k - 1)`` FLOPs and ``out_numel * k`` MACs. A bias adds ``out_numel`` of
each.

Worked example: ``Linear(5, 4)`` on ``(1, 5)``: 4 outputs * (2*5 - 1) = 36, + 4 bias adds = 40 FLOPs;
MACs 4 * 5 + 4 = 24.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, method_rule, module_rule, module_tensor, numel, prod


def matmul_cost(out_numel: int, k: int) -> Cost:
    """``out_numel`` dot products of length ``k``: FLOPs ``out_numel * (2k - 1)``, MACs ``out_numel * k``."""
    if out_numel == 0 or k == 0:
        return Cost(0, 0)
    return Cost(out_numel * (2 * k - 1), out_numel * k)


def linear_cost(out_numel: int, in_features: int, bias: bool) -> Cost:
    """``y = x W^T (+ b)``: ``out_numel * (2 * in_features - 1)`` FLOPs, plus ``out_numel`` for a bias.

    MACs: ``out_numel * in_features`` (+ ``out_numel`` for a bias).
    """
    cost = matmul_cost(out_numel, in_features)
    if bias and out_numel:
        cost = cost + Cost(out_numel, out_numel)
    return cost


# [*, out] = Linear(in, out)([*, in])
@module_rule(nn.Linear)
def linear_module(call: OpCall) -> Cost:
    module = call.module
    return linear_cost(numel(call.output), module.in_features, module_tensor(module, "bias") is not None)


# [*, out] = F.linear([*, in], weight [out, in], bias [out] | None)
@function_rule(F.linear)
def linear_function(call: OpCall) -> Cost:
    weight = call.arg(1, "weight")
    bias = call.arg(2, "bias", None)
    return linear_cost(numel(call.output), weight.shape[-1], bias is not None)


def _contracted_size(a: torch.Tensor) -> int:
    """The summed dimension of ``a @ b``: the last dimension of ``a`` (its only one when 1-D)."""
    return a.shape[-1] if a.dim() > 0 else 1


# [..., n, p] = matmul([..., n, k], [..., k, p]); 1-D operands are promoted as torch.matmul does
# aten: [n, p] = mm([n, k], [k, p]); [b, n, p] = bmm([b, n, k], [b, k, p]); [n] = mv([n, k], [k])
@function_rule(torch.matmul, operator.matmul, torch.mm, torch.bmm, torch.mv)
@method_rule("matmul", "mm", "bmm", "mv", "__matmul__")
@aten_rule(*aten_ops("matmul", "mm", "bmm", "mv"))
def matmul(call: OpCall) -> Cost:
    a = call.arg(0, "input")
    return matmul_cost(numel(call.output), _contracted_size(a))


def _scaling_flops(out_numel: int, beta: float, alpha: float) -> int:
    """``beta * input + alpha * (a @ b)``: one add per output, one multiply per factor that is not 1."""
    return out_numel * (1 + (beta != 1) + (alpha != 1))


# [] = dot([k], [k])
@function_rule(torch.dot, torch.vdot, torch.inner)
@method_rule("dot", "vdot", "inner")
@aten_rule(*aten_ops("dot", "vdot"))
def dot(call: OpCall) -> Cost:
    """One dot product of length ``k``; ``inner`` of N-d tensors: ``out_numel`` of them."""
    return matmul_cost(numel(call.output), _contracted_size(call.arg(0, "input")))


# [n, p] = addmm(input [n, p] (broadcast), mat1 [n, k], mat2 [k, p], beta=1, alpha=1)
# [b, n, p] = baddbmm(input, batch1 [b, n, k], batch2 [b, k, p], beta=1, alpha=1)
# [n] = addmv(input [n], mat [n, k], vec [k], beta=1, alpha=1)
@function_rule(torch.addmm, torch.baddbmm, torch.addmv)
@method_rule("addmm", "baddbmm", "addmv")
@aten_rule(*aten_ops("addmm", "baddbmm", "addmv"))
def addmm(call: OpCall) -> Cost:
    """The product as :func:`matmul_cost`, plus ``out_numel`` adds of ``input`` and a multiply per
    ``beta``/``alpha`` that is not 1. The adds of ``input`` are MACs, as a ``Linear`` bias is (an
    ``aten.addmm`` is how ``nn.Linear`` with a bias runs); the scaling multiplies are not."""
    # the two matrices are the last two tensors; numbers passed positionally are the deprecated
    # ``addmm(beta, input, [alpha,] mat1, mat2)`` forms
    tensors = [a for a in (*call.args, *call.kwargs.values()) if isinstance(a, torch.Tensor)]
    numbers = [a for a in call.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    beta = call.kwargs.get("beta", numbers[0] if numbers else 1)
    alpha = call.kwargs.get("alpha", numbers[1] if len(numbers) > 1 else 1)
    matrices = [call.kwargs[k] for k in ("mat1", "batch1") if k in call.kwargs] or tensors[-2:-1]
    out = numel(call.output)
    return matmul_cost(out, _contracted_size(matrices[0])) + Cost(_scaling_flops(out, beta, alpha), out)


def grouped_mm_cost(a_shape: tuple[int, ...], b_shape: tuple[int, ...], groups: int, out_numel: int) -> Cost:
    """A grouped product (one matrix product per expert of a mixture of experts).

    ``a`` 2-D ``(M, K)`` with its rows split into groups by ``offs``, ``b`` 3-D ``(G, K, N)``: each row
    is one group's row, ``out (M, N)``: :func:`matmul_cost` of ``M * N`` dot products of length ``K``;
    the same for ``a`` 3-D (a batch of products, as ``bmm``): ``out_numel`` dot products of length
    ``K``. Both 2-D (a weight gradient: ``a (M, K)`` and ``b (K, N)`` with ``K`` split into ``G``
    groups, ``out (G, M, N)``): ``M * N * K`` multiplies and ``M * N * (K - G)`` adds, every group
    taken to hold at least one of the ``K`` (``offs`` is not read: its values are data)."""
    k = a_shape[-1]
    if len(a_shape) == 2 and len(b_shape) == 2:
        m, n = a_shape[0], b_shape[1]
        if m * n * k == 0:
            return Cost(0, 0)
        return Cost(m * n * max(2 * k - groups, 0), m * n * k)
    return matmul_cost(out_numel, k)


# out = _grouped_mm(mat_a, mat_b, offs=None, bias=None, out_dtype=None): see grouped_mm_cost; a bias
# adds out_numel of each, as a Linear's
@aten_rule(*aten_ops("_grouped_mm"))
def grouped_mm(call: OpCall) -> Cost:
    a, b, offs = call.args[0], call.args[1], call.arg(2, "offs", None)
    out = numel(call.output)
    groups = offs.shape[0] if offs is not None else (a.shape[0] if a.dim() == 3 else 1)
    cost = grouped_mm_cost(tuple(a.shape), tuple(b.shape), groups, out)
    return cost + Cost(out, out) if call.arg(3, "bias", None) is not None else cost


# transformers' stand-in where torch._grouped_mm cannot run (older torch on CPU): the same products,
# expert by expert; (S, N) = grouped_mm_fallback(input (S, K), weight (G, K, N), offs (G,))
@aten_rule("transformers::grouped_mm_fallback")
def grouped_mm_fallback(call: OpCall) -> Cost:
    return grouped_mm_cost(tuple(call.args[0].shape), tuple(call.args[1].shape), call.args[1].shape[0], numel(call.output))


# its backward: grad_input (S, K) = grad_output (S, N) @ weight[g].T per group, grad_weight (G, K, N) =
# input[rows of g].T @ grad_output[rows of g]: the S rows split among the G groups
@aten_rule("transformers::grouped_mm_fallback_backward")
def grouped_mm_fallback_backward(call: OpCall) -> Cost:
    (s, k), (groups, _, n) = call.args[0].shape, call.args[1].shape
    grad_input = matmul_cost(s * k, n)
    grad_weight = grouped_mm_cost((k, s), (s, n), groups, groups * k * n)
    return grad_input + grad_weight


def bilinear_cost(rows: int, in1: int, in2: int, out_features: int, bias: bool) -> Cost:
    """``y[n, o] = x1[n] A[o] x2[n] (+ b[o])`` as PyTorch evaluates it (``aten._trilinear``, one output
    feature at a time): ``x1 A[o]`` over ``in1`` for every ``(n, j)``, ``rows * out * in2`` dot products
    of length ``in1``; those with ``x2`` over ``in2``, ``rows * out`` of length ``in2``; each slice added
    into the zeroed output, ``rows * out`` adds. A bias adds ``rows * out`` FLOPs and no MACs (an add of
    its own, as PyTorch runs it)."""
    outputs = rows * out_features
    cost = matmul_cost(outputs * in2, in1) + matmul_cost(outputs, in2) + Cost(outputs, 0)
    return cost + Cost(outputs, 0) if bias else cost


# [*, out] = F.bilinear(input1 [*, in1], input2 [*, in2], weight [out, in1, in2], bias=None) (nn.Bilinear)
@function_rule(torch.bilinear, F.bilinear)
def bilinear(call: OpCall) -> Cost:
    x1, x2, weight = call.arg(0, "input1"), call.arg(1, "input2"), call.arg(2, "weight")
    bias = call.arg(3, "bias", None) is not None
    return bilinear_cost(x1.numel() // max(x1.shape[-1], 1), x1.shape[-1], x2.shape[-1], weight.shape[0], bias)


def _expanded_shape(shape: tuple[int, ...], expand: list[int], rank: int) -> list[int]:
    """``shape`` with a dimension of 1 inserted at each of ``expand`` (increasing), as ``_trilinear``
    unsqueezes its operands."""
    sizes, given = [], iter(shape)
    for i in range(rank):
        sizes.append(1 if i in expand else next(given))
    return sizes


# out = _trilinear(i1, i2, i3, expand1, expand2, expand3, sumdim, unroll_dim=1): torch.bilinear's forward
# (x1 [N, in1], weight [out, in1, in2], x2 [N, in2], [1, 3], [0], [1, 2], [2, 3]) and its three gradients.
# As the kernel runs it, one slice of unroll_dim at a time: i1 * i2 summed over the summed dims i3 lacks,
# that with i3 summed over the other summed dims (each a batched product), the slice added into the output.
@aten_rule(*aten_ops("_trilinear"))
def trilinear(call: OpCall) -> Cost:
    i1, i2, i3 = call.args[0], call.args[1], call.args[2]
    expand1, expand2, expand3, sumdim = (list(call.args[k]) for k in range(3, 7))
    unroll = call.arg(7, "unroll_dim", 1)
    rank = i1.dim() + len(expand1)
    s1, s2, s3 = (_expanded_shape(tuple(t.shape), e, rank) for t, e in ((i1, expand1), (i2, expand2), (i3, expand3)))
    first = [i for i in sumdim if i in expand3 and i != unroll]  # summed in i1 * i2
    second = [i for i in sumdim if i not in expand3 and i != unroll]  # summed with i3
    slices = max(s1[unroll], s2[unroll], s3[unroll])
    one = [max(a, b) for a, b in zip(s1, s2)]  # the broadcast of i1 and i2 in one slice
    one[unroll] = 1
    k1 = prod(one[i] for i in first)
    buffer = [1 if i in first else size for i, size in enumerate(one)]
    two = [max(a, b) for a, b in zip(buffer, s3)]
    two[unroll] = 1
    k2 = prod(two[i] for i in second)
    result = prod(1 if i in second else size for i, size in enumerate(two))
    per_slice = matmul_cost(prod(buffer), k1) + matmul_cost(result, k2) + Cost(result, 0)
    return Cost(per_slice.flops * slices, per_slice.macs * slices)


# aten.linear arrives decomposed (addmm / mm) under a dispatch mode; the entry serves modes that keep it
@aten_rule(*aten_ops("linear"))
def linear_aten(call: OpCall) -> Cost:
    return linear_function(call)
