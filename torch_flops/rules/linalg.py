"""Pairwise distances, cross products, traces, and LAPACK's factorisations and solves.

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
- factorisations and solves (LU, ``solve``, ``inv``, ``det``, ``slogdet``, ``lu_solve``, Cholesky,
  ``cholesky_solve``, ``cholesky_inverse``, QR, triangular solves): the operation counts of the LAPACK
  routines PyTorch calls, as LAPACK's own timing suite counts them (``dopla``, LAWN 41; divisions
  counted as multiplies, an LU's pivot reciprocals not), per matrix;
  complex matrices 6 FLOPs per multiply and 2 per add. ``inv`` is ``solve(A, I)``; ``det`` adds the
  product of the LU's diagonal (``n - 1``), ``slogdet`` the logs of its magnitudes summed and the product
  of its signs (``4n - 2``). MACs 0. Iterative methods (``svd``, ``eig``, ``eigh``, ``lstsq``,
  ``matrix_exp``) have no fixed count and are left unsupported.

Worked example: ``torch.cdist`` of ``(2, 10, 5)`` and ``(2, 20, 5)`` rows: ``2 * 10 * 20 * 15 = 6,000``
FLOPs; of ``(30, 5)`` and ``(40, 5)``: ``30 * 40 * 13 + 30 * 9 + 40 * 9 + 30 * 5 + 2 * 30 * 40 = 18,780``.
"""

from __future__ import annotations

import math

import torch

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, method_rule, numel, prod

_MM_MODES = {None: 0, 0: 0, 1: 1, 2: 2, "use_mm_for_euclid_dist_if_necessary": 0, "use_mm_for_euclid_dist": 1,
             "donot_use_mm_for_euclid_dist": 2}  # torch.cdist's names for aten's compute_mode


def cdist_cost(batch: int, rows1: int, rows2: int, features: int, p: float, compute_mode: int = 0) -> Cost:
    """Distances between ``rows1`` and ``rows2`` rows of ``features`` values, ``batch`` times (see the
    module docstring for the two routes)."""
    pairs = batch * rows1 * rows2
    if pairs == 0 or features == 0:  # no features: PyTorch returns zeros without arithmetic
        return Cost(0, 0)
    product_route = p == 2 and (compute_mode == 1 or compute_mode == 0 and (rows1 > 25 or rows2 > 25))
    if product_route:
        norms = batch * (rows1 + rows2) * (2 * features - 1)
        product = pairs * (2 * (features + 2) - 1)
        return Cost(norms + batch * rows1 * features + product + 2 * pairs, pairs * (features + 2))
    per_pair = 3 * features - 1 if p in (0, 1, math.inf) else 3 * features if p == 2 else 4 * features
    return Cost(pairs * per_pair, 0)


# [B, P, R] = cdist(x1 [B, P, M], x2 [B, R, M], p=2.0, compute_mode=None); aten: _cdist_forward(x1, x2, p, compute_mode)
@function_rule(torch.cdist)
@aten_rule(*aten_ops("_cdist_forward"))
def cdist(call: OpCall) -> Cost:
    x1, x2 = call.arg(0, "x1"), call.arg(1, "x2")
    p = float(call.arg(2, "p", 2.0))
    mode = _MM_MODES.get(call.arg(3, "compute_mode", None), 0)
    batch = prod(call.output.shape[:-2])  # the two batches broadcast
    return cdist_cost(batch, x1.shape[-2], x2.shape[-2], x1.shape[-1], p, mode)


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
    batch = prod(call.output.shape[:-2])  # the gradient has the broadcast batch (summed back to x1's after)
    return cdist_backward_cost(batch, x1.shape[-2], x2.shape[-2], x1.shape[-1], float(call.args[3]))


# the product route on its own, when autograd records it: [B, P, R] = _euclidean_dist(x1 [B, P, M], x2 [B, R, M])
@aten_rule(*aten_ops("_euclidean_dist"))
def euclidean_dist(call: OpCall) -> Cost:
    x1, x2 = call.args[0], call.args[1]
    return cdist_cost(prod(call.output.shape[:-2]), x1.shape[-2], x2.shape[-2], x1.shape[-1], 2.0, compute_mode=1)


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


# -- factorisations and solves: LAPACK's operation counts, as its timing suite (dopla, LAWN 41) counts them ---
# Each count is (multiplies, adds) of one matrix; a complex matrix costs 6 per multiply and 2 per add.
def getrf_counts(m: int, n: int) -> tuple[float, float]:
    """LU with partial pivoting of an ``m x n`` matrix, as LAPACK's timing suite (``dopla``) counts it,
    ``k = min(m, n)``: adds ``k (m n - (m + n)(k + 1)/2 + (k + 1)(2k + 1)/6)``, multiplies those plus
    ``k (m - (k + 1)/2)`` (the column scalings; the pivots' reciprocals are not counted)."""
    k = min(m, n)
    adds = k * (m * n - (m + n) * (k + 1) / 2 + (k + 1) * (2 * k + 1) / 6)
    return adds + k * (m - (k + 1) / 2), adds


def getrs_counts(n: int, nrhs: int) -> tuple[float, float]:
    """Two triangular solves with an LU factorisation, for ``nrhs`` right-hand sides."""
    return nrhs * n * n, nrhs * n * (n - 1)


def potrf_counts(n: int) -> tuple[float, float]:
    """Cholesky factorisation."""
    return n * ((n / 6 + 0.5) * n + 1 / 3), n * (n * n / 6 - 1 / 6)


def potrs_counts(n: int, nrhs: int) -> tuple[float, float]:
    return nrhs * n * (n + 1), nrhs * n * (n - 1)


def potri_counts(n: int) -> tuple[float, float]:
    """The inverse from a Cholesky factor."""
    return n * (2 / 3 + n * (n / 3 + 1)), n * (1 / 6 + n * (n / 3 - 0.5))


def geqrf_counts(m: int, n: int) -> tuple[float, float]:
    """Householder QR of an ``m x n`` matrix."""
    if m > n:
        return n * (n * (0.5 - n / 3 + m) + m + 23 / 6), n * (n * (0.5 - n / 3 + m) + 5 / 6)
    return m * (m * (-0.5 - m / 3 + n) + 2 * n + 23 / 6), m * (m * (-0.5 - m / 3 + n) + n + 5 / 6)


def orgqr_counts(m: int, n: int, k: int) -> tuple[float, float]:
    """Forming the ``m x n`` Q of ``k`` Householder reflectors."""
    return (k * (2 * m * n + 2 * n - 5 / 3 + k * (2 * k / 3 - (m + n) - 1)),
            k * (2 * m * n + n - m + 1 / 3 + k * (2 * k / 3 - (m + n))))


def lapack_flops(counts: list[tuple[float, float]], matrices: int, complex_: bool) -> Cost:
    """FLOPs of ``matrices`` times the summed counts, rounded; 0 MACs (the counts mix products and
    divisions, and LAPACK reports none)."""
    multiplies, adds = sum(c[0] for c in counts), sum(c[1] for c in counts)
    per_matrix = 6 * multiplies + 2 * adds if complex_ else multiplies + adds
    return Cost(max(round(matrices * per_matrix), 0), 0)


def _matrices(a: torch.Tensor) -> int:
    return prod(a.shape[:-2])


def _rhs(b: torch.Tensor, a: torch.Tensor, left: bool = True) -> tuple[int, int]:
    """The right-hand sides of ``A X = B`` (or ``X A = B``): (systems, columns per system). A ``B`` of one
    dimension fewer than ``A`` is a batch of vectors."""
    n = a.shape[-1]
    if b.dim() == a.dim() - 1 and left:
        return b.numel() // max(n, 1), 1
    columns = b.shape[-1] if left else b.shape[-2]
    return b.numel() // max(n * columns, 1), columns


@aten_rule(*aten_ops("linalg_lu_factor_ex", "linalg_lu"))
def lu_factor(call: OpCall) -> Cost:
    a = call.args[0]
    return lapack_flops([getrf_counts(a.shape[-2], a.shape[-1])], _matrices(a), a.is_complex())


@aten_rule(*aten_ops("linalg_lu_solve"))
def lu_solve(call: OpCall) -> Cost:
    lu = call.args[0]  # B broadcasts against LU's batch: the solves are the output's
    systems, columns = _rhs(call.output, lu, call.kwargs.get("left", True))
    return lapack_flops([getrs_counts(lu.shape[-1], columns)], systems, lu.is_complex())


# result, LU, pivots, info = _linalg_solve_ex(A, B, left=True): LU of each matrix, then the solves
@aten_rule(*aten_ops("_linalg_solve_ex"))
def solve(call: OpCall) -> Cost:
    result, lu = call.output[0], call.output[1]
    n = lu.shape[-1]
    systems, columns = _rhs(result, lu, call.kwargs.get("left", True))
    complex_ = lu.is_complex()
    return lapack_flops([getrf_counts(n, n)], _matrices(lu), complex_) + lapack_flops([getrs_counts(n, columns)], systems, complex_)


# PyTorch inverts as solve(A, I): an LU, then n right-hand sides
@aten_rule(*aten_ops("linalg_inv_ex"))
def inverse(call: OpCall) -> Cost:
    a = call.args[0]
    n = a.shape[-1]
    return lapack_flops([getrf_counts(n, n), getrs_counts(n, n)], _matrices(a), a.is_complex())


# det: an LU, then the product of its diagonal (n - 1); slogdet: the logs of the diagonal's magnitudes,
# summed (3n - 1), and the product of their signs (n - 1)
@aten_rule(*aten_ops("_linalg_det", "_linalg_slogdet"))
def determinant(call: OpCall) -> Cost:
    a = call.args[0]
    n = a.shape[-1]
    tail = n - 1 if len(call.output) == 3 else 4 * n - 2
    return lapack_flops([getrf_counts(n, n), (max(tail, 0), 0)], _matrices(a), a.is_complex())


@aten_rule(*aten_ops("linalg_cholesky_ex"))
def cholesky(call: OpCall) -> Cost:
    a = call.args[0]
    return lapack_flops([potrf_counts(a.shape[-1])], _matrices(a), a.is_complex())


@aten_rule(*aten_ops("cholesky_solve"))
def cholesky_solve(call: OpCall) -> Cost:
    factor = call.args[1]  # cholesky_solve(B, L): the solves of B's columns with the factor
    systems, columns = _rhs(call.output, factor)
    return lapack_flops([potrs_counts(factor.shape[-1], columns)], systems, factor.is_complex())


@aten_rule(*aten_ops("cholesky_inverse"))
def cholesky_inverse(call: OpCall) -> Cost:
    factor = call.args[0]
    return lapack_flops([potri_counts(factor.shape[-1])], _matrices(factor), factor.is_complex())


# Q, R = linalg_qr(A, mode): the reflectors, then Q (reduced: m x k; complete: m x m; "r": none)
@aten_rule(*aten_ops("linalg_qr"))
def qr(call: OpCall) -> Cost:
    a = call.args[0]
    m, n = a.shape[-2], a.shape[-1]
    k = min(m, n)
    mode = call.arg(1, "mode", "reduced")
    counts = [geqrf_counts(m, n)]
    if mode != "r" and k:
        counts.append(orgqr_counts(m, m if mode == "complete" else k, k))
    return lapack_flops(counts, _matrices(a), a.is_complex())


# X = linalg_solve_triangular(A [*, n, n], B, *, upper, left=True, unitriangular=False): per right-hand
# side n (n - 1)/2 multiply-adds and n divides (none with a unit diagonal), as trsm counts them
@aten_rule(*aten_ops("linalg_solve_triangular"))
def solve_triangular(call: OpCall) -> Cost:
    a = call.args[0]
    n = a.shape[-1]
    systems, columns = _rhs(call.output, a, call.kwargs.get("left", True))
    divides = 0 if call.kwargs.get("unitriangular", False) else n
    return lapack_flops([(columns * (n * (n - 1) / 2 + divides), columns * n * (n - 1) / 2)], systems, a.is_complex())
