"""Hand-computed costs of pairwise distances, cross products, traces and LAPACK's factorisations and
solves (``torch_flops/rules/linalg.py``).

``cdist`` per pair of rows of ``M`` features: ``3M - 1`` for p 0, 1, inf; ``3M`` for 2; ``4M`` otherwise;
for p = 2 with more than 25 rows on a side, the product route: norms ``(P + R)(2M - 1)``, ``x1 * -2``
``P * M``, the product ``P * R * (2M + 3)`` and a clamp and a sqrt per pair.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from models import Op
from torch_flops import Cost, TorchFLOPsByFX, count_aten
from torch_flops.rules.linalg import cdist_backward_cost, cdist_cost

A, B = torch.randn(2, 10, 5), torch.randn(2, 20, 5)  # 2 * 10 * 20 = 400 pairs of 5 features
P, R = torch.randn(30, 5), torch.randn(40, 5)
M4 = torch.randn(4, 4) + 4 * torch.eye(4)  # well conditioned
SPD4 = M4 @ M4.T + torch.eye(4)  # 1,200 pairs: more than 25 rows, the product route for p = 2
PRODUCT_ROUTE = 30 * 40 * (2 * 7 - 1) + (30 + 40) * (2 * 5 - 1) + 30 * 5 + 2 * 30 * 40  # 18,780

# (id, callable, inputs, FLOPs, MACs)
CASES = [
    ("cdist_p2", lambda a, b: torch.cdist(a, b), (A, B), 400 * 15, 0),
    ("cdist_p1", lambda a, b: torch.cdist(a, b, p=1.0), (A, B), 400 * 14, 0),
    ("cdist_p0", lambda a, b: torch.cdist(a, b, p=0.0), (A, B), 400 * 14, 0),
    ("cdist_pinf", lambda a, b: torch.cdist(a, b, p=float("inf")), (A, B), 400 * 14, 0),
    ("cdist_p3", lambda a, b: torch.cdist(a, b, p=3.0), (A, B), 400 * 20, 0),
    ("cdist_product_route", lambda a, b: torch.cdist(a, b), (P, R), PRODUCT_ROUTE, 30 * 40 * 7),
    ("cdist_no_product", lambda a, b: torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist"), (P, R), 1200 * 15, 0),
    ("cdist_product_forced", lambda a, b: torch.cdist(a, b, compute_mode="use_mm_for_euclid_dist"), (A, B),
     2 * (10 * 20 * 13 + 30 * 9 + 10 * 5 + 2 * 10 * 20), 400 * 7),
    # batches broadcast: (1, 10, 5) and (3, 20, 5) are 3 * 200 = 600 pairs; on the product route 3 * 18,780
    ("cdist_broadcast", lambda a, b: torch.cdist(a, b), (torch.randn(1, 10, 5), torch.randn(3, 20, 5)), 600 * 15, 0),
    ("cdist_product_broadcast", lambda a, b: torch.cdist(a, b), (P[None], R.expand(3, 40, 5)), 3 * PRODUCT_ROUTE, 3 * 30 * 40 * 7),
    ("cdist_no_features", lambda a, b: torch.cdist(a, b), (torch.randn(30, 0), torch.randn(40, 0)), 0, 0),
    ("cross", lambda a, b: torch.linalg.cross(a[..., :3], b[..., :3]), (P[:20], R[:20]), 3 * 20 * 3, 0),  # 6 mul + 3 sub a vector
    ("trace", lambda a: torch.trace(a), (torch.randn(3, 5),), 3 - 1, 0),
    # factorisations of 4 x 4 matrices, as LAPACK's timing suite counts them: LU k (m n - (m + n)(k + 1)/2
    # + (k + 1)(2k + 1)/6) adds, 4 (16 - 10 + 7.5) = 14, and those + k (m - (k + 1)/2) = 6 multiplies: 20 + 14;
    # its solves n^2 multiplies and n (n - 1) adds per column
    ("lu_factor", lambda a: torch.linalg.lu_factor(a)[0], (M4,), 20 + 14, 0),
    ("lu_factor_wide", lambda a: torch.linalg.lu_factor(a)[0], (torch.randn(2, 4),), (3 + 2 * (2 - 1.5)) + 3, 0),  # k = 2: 4 + 3
    ("solve", lambda a, b: torch.linalg.solve(a, b), (M4, torch.randn(4, 2)), 34 + 2 * (16 + 12), 0),
    ("solve_vector", lambda a, b: torch.linalg.solve(a, b), (M4, torch.randn(4)), 34 + 16 + 12, 0),
    # B (3, 2) broadcast over 5 LU factors of 3 x 3 (8 + 5 each): 5 systems of 2 columns, 9 + 6 each
    ("lu_solve_broadcast", lambda a, b: torch.linalg.lu_solve(*torch.linalg.lu_factor(a), b),
     (torch.randn(5, 3, 3) + 3 * torch.eye(3), torch.randn(3, 2)), 5 * (8 + 5) + 5 * 2 * (9 + 6), 0),
    ("inv", lambda a: torch.linalg.inv(a), (M4,), 34 + 4 * (16 + 12), 0),  # solve(A, I): 146
    ("inv_batched", lambda a: torch.linalg.inv(a), (torch.randn(3, 4, 4),), 3 * 146, 0),
    # complex: 6 per multiply, 2 per add: 6 * (20 + 64) + 2 * (14 + 48)
    ("inv_complex", lambda a: torch.linalg.inv(a), (torch.randn(4, 4, dtype=torch.complex64),), 6 * 84 + 2 * 62, 0),
    ("det", lambda a: torch.linalg.det(a), (M4,), 34 + 3, 0),  # and the product of the diagonal
    ("slogdet", lambda a: torch.linalg.slogdet(a)[1], (M4,), 34 + (3 * 4 - 1) + 3, 0),  # logs summed, signs' product
    # triangular solves, per column n (n - 1)/2 multiply-adds and n divides (none with a unit diagonal)
    ("solve_triangular", lambda a, b: torch.linalg.solve_triangular(a, b, upper=True), (torch.triu(M4), torch.randn(4, 2)),
     2 * (6 + 4 + 6), 0),
    ("solve_unitriangular", lambda a, b: torch.linalg.solve_triangular(a, b, upper=True, unitriangular=True),
     (torch.triu(M4), torch.randn(4, 2)), 2 * (6 + 6), 0),
    ("lu_unpack", lambda a: torch.lu_unpack(*torch.linalg.lu_factor(a))[1], (M4,), 34, 0),  # the unpacking copies
    # Cholesky: n (n + 1)(n + 2) / 6 multiplies and (n - 1) n (n + 1) / 6 adds, 20 + 10; its solve
    # n (n + 1) multiplies and n (n - 1) adds per column; the inverse from it 40 + 14
    ("cholesky", lambda a: torch.linalg.cholesky(a), (SPD4,), 30, 0),
    ("cholesky_solve", lambda a, b: torch.cholesky_solve(b, torch.linalg.cholesky(a)), (SPD4, torch.randn(4, 2)), 30 + 2 * (20 + 12), 0),
    ("cholesky_inverse", lambda a: torch.cholesky_inverse(torch.linalg.cholesky(a)), (SPD4,), 30 + 54, 0),
    # Householder QR of 4 x 4: 82 + 54; forming Q: 52 + 44
    ("qr", lambda a: torch.linalg.qr(a)[1], (M4,), 136 + 96, 0),  # geqrf and orgqr as dopla counts them
    ("qr_r_only", lambda a: torch.linalg.qr(a, mode="r")[1], (M4,), 136, 0),
]


@pytest.mark.parametrize("case_id, fn, inputs, flops, macs", CASES, ids=[c[0] for c in CASES])
def test_function_and_aten_levels_agree_with_the_hand_count(case_id: str, fn: Callable[..., Any], inputs: tuple,
                                                            flops: int, macs: int) -> None:
    counter = TorchFLOPsByFX(Op(fn))
    counter.propagate(*inputs)
    assert not counter.unsupported
    _, tally = count_aten(fn, *inputs)
    assert not tally.unsupported
    assert (counter.total_flops, counter.total_macs) == (tally.cost.flops, tally.cost.macs) == (flops, macs)


@pytest.mark.parametrize("p, per_pair_and_feature", [(1.0, 4), (2.0, 4), (float("inf"), 6), (0.0, 0)])
def test_the_gradient_of_a_distance_computed_the_direct_way(p: float, per_pair_and_feature: int) -> None:
    """``cdist(a, b, p)`` on 400 pairs of 5 features (20 rows: the direct way), gradient of ``a``."""
    counter = TorchFLOPsByFX(Op(lambda a, b: torch.cdist(a, b, p=p)))
    counter.propagate(A.clone().requires_grad_(), B, backward=True)
    assert counter.total_backward_flops == 400 * 5 * per_pair_and_feature


def test_the_formulas_at_their_edges() -> None:
    assert cdist_backward_cost(2, 10, 20, 5, 3.0) == Cost(7 * 2000 + 400, 0)  # other p: and the power per pair
    assert cdist_cost(0, 10, 20, 5, 2.0) == cdist_cost(1, 10, 20, 0, 1.0) == Cost(0, 0)
    assert cdist_cost(1, 26, 1, 4, 2.0, compute_mode=2) == Cost(26 * 12, 0)  # never the product route
