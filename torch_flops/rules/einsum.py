"""``torch.einsum``, priced as PyTorch actually computes it.

``torch.einsum`` is not one kernel: ATen's ``einsum`` (``aten/src/ATen/native/Linear.cpp``) rewrites the
equation into sums, elementwise products and batched matrix products, and the price is the price of
those ops under the project's rules. :func:`einsum_cost` replays that algorithm on shapes alone:

1. Parse. Labels are ``a-zA-Z`` (spaces ignored), ``...`` stands for broadcast dimensions aligned to
   the right. Without ``->`` the output is ``...`` followed by the labels that appear exactly once in
   the whole equation, sorted (upper case before lower case). A label repeated inside one operand
   takes a diagonal (a view: 0). Every operand is then viewed with one dimension per label (size 1
   where it lacks the label), which costs nothing.
2. A dimension of size 1 is a broadcast, not data: for each label PyTorch counts the operands in
   which it has size ``!= 1``.
3. Operands are contracted pairwise, left to right (the result of the first two goes to the front and
   meets the third next). When ``torch.backends.opt_einsum`` is available and enabled and there are
   three or more operands, PyTorch follows ``opt_einsum.contract_path`` instead; the rule asks
   ``opt_einsum`` for the same path. Before each pair, every non-output label that only one of the two
   operands still holds (and no later operand does) is summed out of that operand (``sum``: ``n - 1``
   adds per output). Labels that both hold and no later operand does are contracted; the rest of the
   labels are kept.
4. A pair with labels to contract is one ``bmm``: ``out_numel`` dot products of length ``k`` (``k``
   the product of the contracted sizes): ``out_numel * (2k - 1)`` FLOPs and ``out_numel * k`` MACs,
   as :func:`~torch_flops.rules.linear.matmul_cost`. A pair with nothing to contract is an elementwise
   ``mul``: ``out_numel`` FLOPs, 0 MACs (outer products, Hadamard products, broadcasts).
5. A single operand with labels missing from the output is reduced by one ``sum``: ``out_numel *
   (n - 1)`` FLOPs; with none (a transpose, a diagonal) it costs 0.

Worked examples (FLOPs / MACs):

- ``ij,jk->ik`` on ``(2, 3), (3, 4)``: one bmm, 8 outputs of length 3: ``8 * (2*3 - 1) = 40`` / ``24``;
- ``bij,bjk->bik`` on ``(2, 3, 4), (2, 4, 5)``: ``30 * (2*4 - 1) = 210`` / ``30 * 4 = 120``;
- ``ij,ij->`` on ``(2, 3)`` twice: one dot product of length 6: ``1 * (2*6 - 1) = 11`` / ``6``;
- ``i,j->ij`` on ``(2,), (3,)`` (outer) and ``ij,ij->ij`` on ``(2, 3)`` (Hadamard): a mul, ``6`` / ``0``;
- ``ij->ji``: 0; ``ij->`` on ``(3, 4)``: ``12 - 1 = 11``; ``ii->`` on ``(3, 3)``: diagonal, then
  ``3 - 1 = 2``;
- ``ij,jk->i`` on ``(2, 3), (3, 4)``: ``k`` is summed out of the second operand first,
  ``3 * (4 - 1) = 9``, then ``j`` is contracted, ``2 * (2*3 - 1) = 10``: ``19`` / ``6``;
- ``ij,jk,kl->il`` on ``(2, 3), (3, 4), (4, 5)``: ``(ij,jk)`` ``8 * 5 = 40`` / ``24``, then
  ``(ik,kl)`` ``10 * (2*4 - 1) = 70`` / ``40``: ``110`` / ``64``;
- ``ij,jk->ik`` on ``(2, 1), (3, 4)``: ``j`` has size 1 in the first operand, so it is summed out of
  the second, ``4 * (3 - 1) = 8``, and the pair is a broadcast mul, ``2 * 4 = 8``: ``16`` / ``0``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from torch_flops.records import ZERO_COST, Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, prod
from torch_flops.rules.elementwise import elementwise_cost
from torch_flops.rules.linear import matmul_cost
from torch_flops.rules.reduction import sum_cost

ELLIPSIS = "..."

# a dimension of the aligned layout: a label, or the j-th broadcast dimension covered by "..."
DimKey = str | tuple[str, int]


def _subscripts(term: str) -> list[str]:
    """The labels of one operand (or of the output), ``...`` as one token; spaces are ignored."""
    tokens: list[str] = []
    i = 0
    while i < len(term):
        char = term[i]
        if char == " ":
            i += 1
        elif char == ".":
            if term[i : i + 3] != ELLIPSIS or ELLIPSIS in tokens:
                raise ValueError(f"einsum: bad ellipsis in {term!r} (three dots, at most once per term)")
            tokens.append(ELLIPSIS)
            i += 3
        elif char.isascii() and char.isalpha():
            tokens.append(char)
            i += 1
        else:
            raise ValueError(f"einsum: invalid subscript {char!r} in {term!r} (labels are a-z, A-Z)")
    return tokens


def _layout(
    equation: str, shapes: Sequence[Sequence[int]]
) -> tuple[int, list[DimKey], list[list[int]], Counter[DimKey]]:
    """Steps 1 and 2: the output rank, every dimension of the aligned layout (output first), each
    operand's sizes in that layout (1 where it lacks a label), and per dimension the number of operands
    in which it has size ``!= 1``."""
    lhs, arrow, rhs = equation.partition("->")
    terms = [_subscripts(term) for term in lhs.split(",")]
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {equation!r} has {len(terms)} operand terms for {len(shapes)} operands")

    ell_num_dim = 0
    label_count: Counter[str] = Counter()
    for labels, shape in zip(terms, shapes):
        n_labels = len(labels) - (ELLIPSIS in labels)
        if ELLIPSIS in labels:
            if len(shape) < n_labels:
                raise ValueError(f"einsum: operand of shape {tuple(shape)} has fewer dimensions than {labels}")
            ell_num_dim = max(ell_num_dim, len(shape) - n_labels)
        elif len(shape) != n_labels:
            raise ValueError(f"einsum: operand of shape {tuple(shape)} does not match subscripts {labels}")
        label_count.update(label for label in labels if label != ELLIPSIS)
    ell_keys: list[DimKey] = [(ELLIPSIS, j) for j in range(ell_num_dim)]

    if arrow:
        output: list[DimKey] = []
        out_tokens = _subscripts(rhs)
        for token in out_tokens:
            if token == ELLIPSIS:
                output += ell_keys
            elif token not in label_count or token in output:
                raise ValueError(f"einsum: output label {token!r} is repeated or not in any operand")
            else:
                output.append(token)
        has_ellipsis = ELLIPSIS in out_tokens
    else:  # implicit: "..." then the labels that appear once, in label order (A-Z, then a-z)
        output = ell_keys + sorted(label for label, count in label_count.items() if count == 1)
        has_ellipsis = True
    contracted = ([] if has_ellipsis else ell_keys) + sorted(label for label in label_count if label not in output)
    dims = output + contracted
    position = {key: index for index, key in enumerate(dims)}

    label_size: dict[DimKey, int] = {}
    dim_counts: Counter[DimKey] = Counter()
    aligned: list[list[int]] = []
    for labels, shape in zip(terms, shapes):
        sizes = [1] * len(dims)
        seen: dict[DimKey, int] = {}
        dim = 0
        for token in labels:
            keys = ell_keys[ell_num_dim - (len(shape) - len(labels) + 1) :] if token == ELLIPSIS else [token]
            for key in keys:
                size = int(shape[dim])
                dim += 1
                if key in seen:  # a repeated label: the diagonal, a view
                    if size != seen[key]:
                        raise ValueError(f"einsum: repeated label {key!r} has sizes {seen[key]} and {size}")
                    continue
                seen[key] = size
                if size != 1:
                    if label_size.get(key, 1) not in (1, size):
                        raise ValueError(f"einsum: {key!r} has sizes {label_size[key]} and {size}")
                    label_size[key] = size
                    dim_counts[key] += 1
                sizes[position[key]] = size
        aligned.append(sizes)
    return len(output), dims, aligned, dim_counts


def _sum_out(sizes: list[int], indices: Sequence[int]) -> tuple[list[int], Cost]:
    """``sum`` over ``indices`` (keepdim): the new sizes (1 there) and the price, :func:`sum_cost`."""
    summed = [1 if i in indices else s for i, s in enumerate(sizes)]
    return summed, sum_cost(prod(sizes), prod(summed))


def _sumproduct_pair(left: list[int], right: list[int], sum_dims: Sequence[int]) -> tuple[list[int], Cost]:
    """ATen's ``sumproduct_pair``: a ``mul`` when nothing is contracted, else one ``bmm`` of
    ``(lro, lo, k) x (lro, k, ro)``."""
    if not sum_dims:
        out = [r if s == 1 else s for s, r in zip(left, right)]
        return out, elementwise_cost(prod(out))
    cost = ZERO_COST
    k = out_numel = 1
    out = []
    for i, (sl, sr) in enumerate(zip(left, right)):
        if i in sum_dims:
            if sl != 1 and sr != 1:
                k *= sl
            elif sl != 1:  # summed before the product (the caller never sends these; ATen handles them)
                left, extra = _sum_out(left, [i])
                cost += extra
            elif sr != 1:
                right, extra = _sum_out(right, [i])
                cost += extra
            out.append(1)
        else:
            size = sl if sl != 1 else sr
            out_numel *= size
            out.append(size)
    return out, cost + matmul_cost(out_numel, k)


def einsum_cost(equation: str, shapes: Sequence[Sequence[int]], path: Sequence[int] | None = None) -> Cost:
    """The cost of ``torch.einsum(equation, *operands)`` on operands of ``shapes`` (pure ints).

    Replays ATen's ``einsum`` (see the module docstring): per operand pair, first a ``sum`` out of either
    operand of the non-output labels only it holds (``out_numel * (n - 1)`` FLOPs), then either one
    ``bmm`` over the ``k`` contracted elements (``out_numel * (2k - 1)`` FLOPs, ``out_numel * k`` MACs)
    or, with nothing to contract, a ``mul`` (``out_numel`` FLOPs, 0 MACs). A single operand costs one
    ``sum`` over its non-output labels (0 when there are none). Pairs are taken left to right; ``path``
    is the flat contraction path ATen's ``einsum`` accepts (``[i0, j0, i1, j1, ...]``, as
    ``opt_einsum.contract_path`` gives it), under which results go to the back of the operand list.

    >>> einsum_cost("ij,jk->ik", [(2, 3), (3, 4)])  # 8 outputs * (2*3 - 1)
    Cost(flops=40, macs=24)
    """
    out_num_dim, dims, ops, dim_counts = _layout(equation, shapes)
    num_ops = len(ops)
    steps = iter(path) if path is not None else None
    cost = ZERO_COST
    while len(ops) > 1:
        i, j = 0, 1
        if steps is not None:
            i, j = sorted((next(steps), next(steps)))
            if i == j or i < 0 or j >= len(ops):
                raise ValueError(f"einsum: invalid contraction path {list(path)}")
        a, b = ops[i], ops[j]
        del ops[j], ops[i]

        sum_dims: list[int] = []
        a_dims: list[int] = []
        b_dims: list[int] = []
        for d in range(out_num_dim, len(dims)):
            key = dims[d]
            if a[d] != 1 and b[d] != 1:
                dim_counts[key] -= 1
                if dim_counts[key] == 1:
                    sum_dims.append(d)
                    dim_counts[key] = 0
            elif dim_counts[key] == 1:
                if a[d] != 1:
                    a_dims.append(d)
                    dim_counts[key] = 0
                elif b[d] != 1:
                    b_dims.append(d)
                    dim_counts[key] = 0
        if a_dims:
            a, extra = _sum_out(a, a_dims)
            cost += extra
        if b_dims:
            b, extra = _sum_out(b, b_dims)
            cost += extra
        result, extra = _sumproduct_pair(a, b, sum_dims)
        cost += extra
        if steps is not None:
            ops.append(result)
        else:
            ops.insert(0, result)

    if len(dims) > out_num_dim and num_ops == 1:  # with several operands the last step is a view
        cost += _sum_out(ops[0], range(out_num_dim, len(dims)))[1]
    return cost


def _subscript_letter(n: Any) -> str:
    """A sublist subscript as ``torch.einsum`` converts it: ``...``, 0-25 -> A-Z, 26-51 -> a-z."""
    if n is Ellipsis:
        return ELLIPSIS
    return chr(ord("A") + n) if n < 26 else chr(ord("a") + n - 26)


def einsum_arguments(args: Sequence[Any]) -> tuple[str, list[torch.Tensor]]:
    """``(equation, operands)`` of the three forms of ``torch.einsum``: ``(eq, a, b, ...)``,
    ``(eq, [a, b, ...])`` and the sublist form ``(a, [0, 1], b, [1, 2], [0, 2])``."""
    if isinstance(args[0], torch.Tensor):
        subscripts = [args[i] for i in range(1, len(args), 2)]
        equation = ",".join("".join(map(_subscript_letter, s)) for s in subscripts)
        if len(args) % 2:
            equation += "->" + "".join(map(_subscript_letter, args[-1]))
        return equation, list(args[0 : len(args) - len(args) % 2 : 2])
    equation, operands = args[0], list(args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    return equation, operands


def torch_path(equation: str, operands: Sequence[torch.Tensor]) -> list[int] | None:
    """The contraction path ``torch.einsum`` passes to ATen: ``opt_einsum``'s when it is available and
    enabled and there are three or more operands (as ``torch.functional.einsum`` decides), else
    ``None`` (left to right)."""
    import torch.backends.opt_einsum as opt_einsum

    if len(operands) <= 2 or not opt_einsum.enabled or not opt_einsum.is_available():
        return None
    steps = opt_einsum.get_opt_einsum().contract_path(equation, *operands, optimize=opt_einsum.strategy)[0]
    return [index for step in steps for index in step]


def _shapes(operands: Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in operands]


# [out] = einsum(equation, *operands) | einsum(equation, [operands]) | einsum(a, [0, 1], b, [1, 2], [0, 2])
@function_rule(*dict.fromkeys((torch.einsum, torch.functional.einsum)))
def einsum(call: OpCall) -> Cost:
    equation, operands = einsum_arguments(call.args)
    return einsum_cost(equation, _shapes(operands), torch_path(equation, operands))


# aten: einsum(equation, tensors, *, path=None); CompositeImplicit, so a dispatch mode normally sees the
# bmm / sum / mul it decomposes into; this entry serves modes that keep it whole
@aten_rule(*aten_ops("einsum"))
def einsum_aten(call: OpCall) -> Cost:
    path = call.arg(2, "path", None)
    return einsum_cost(call.arg(0, "equation"), _shapes(call.arg(1, "tensors")), path)
