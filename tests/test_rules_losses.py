"""Hand-computed costs of losses (``torch_flops/rules/backward.py``), forward and backward, as their
kernels compute them, and of what a random draw costs (nothing).

Per element, then the reduction (``sum``: ``numel - 1`` adds; ``mean``: those and a divide):
binary cross-entropy 9 (+ 1 with a weight), its gradient 6 (+ 1 with a weight, + 1 for mean);
with logits 5 (log-sigmoid 2, then ``(1 - t) * x - ...`` 3), ``pos_weight`` ``+ 3`` and its own
``numel``; smooth L1 6 (2 with ``beta=0``), its gradient 6; Huber 5, its gradient 5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from models import Op
from torch_flops import TorchFLOPsByFX, count_aten

N = 6 * 5  # elements
TARGET = torch.rand(6, 5)

# (id, loss of x, forward FLOPs, backward FLOPs or None where the gradient is elementwise ops)
CASES = [
    ("bce_mean", lambda x: F.binary_cross_entropy(x, TARGET), 9 * N + N, (6 + 1) * N),
    ("bce_sum_weighted", lambda x: F.binary_cross_entropy(x, TARGET, weight=torch.rand(6, 5), reduction="sum"),
     10 * N + N - 1, 7 * N),
    ("bce_none", lambda x: F.binary_cross_entropy(x, TARGET, reduction="none").sum(), 9 * N + N - 1, 6 * N),  # the sum: N - 1
    ("bce_with_logits", lambda x: F.binary_cross_entropy_with_logits(x, TARGET), 5 * N + N, None),
    ("bce_with_logits_pos_weight", lambda x: F.binary_cross_entropy_with_logits(x, TARGET, pos_weight=torch.full((5,), 2.0)),
     8 * N + N + 5, None),  # torch.full is known zero
    ("smooth_l1", lambda x: F.smooth_l1_loss(x, TARGET), 6 * N + N, 6 * N),
    ("smooth_l1_beta_0", lambda x: F.smooth_l1_loss(x, TARGET, beta=0.0), 2 * N + N, None),
    ("huber_sum", lambda x: F.huber_loss(x, TARGET, reduction="sum"), 5 * N + N - 1, 5 * N),
]


def counted(loss: Callable[[torch.Tensor], torch.Tensor]) -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(Op(loss))
    counter.propagate(torch.rand(6, 5).requires_grad_(), backward=True)
    return counter


@pytest.mark.parametrize("case_id, loss, forward, backward", CASES, ids=[c[0] for c in CASES])
def test_loss_forward_and_backward(case_id: str, loss: Any, forward: int, backward: int | None) -> None:
    counter = counted(loss)
    assert not counter.unsupported
    assert not [r.backward_unsupported_ops for r in counter.records if r.backward_unsupported_ops]
    assert counter.total_flops == forward
    _, tally = count_aten(loss, torch.rand(6, 5))
    assert (tally.cost.flops, dict(tally.unsupported)) == (forward, {})  # the same at the aten level
    if backward is not None:
        assert counter.total_backward_flops == backward


@pytest.mark.parametrize("draw", [
    lambda x: x.exponential_(), lambda x: x.geometric_(0.5), lambda x: x.cauchy_(), lambda x: x.log_normal_(),
    lambda x: x.random_(0, 10),
], ids=["exponential_", "geometric_", "cauchy_", "log_normal_", "random_"])
def test_random_draws_cost_nothing(draw: Callable[[torch.Tensor], torch.Tensor]) -> None:
    _, tally = count_aten(draw, torch.empty(8))
    assert (tally.cost.flops, dict(tally.unsupported)) == (0, {})


def test_gumbel_softmax_counts_its_arithmetic_not_its_draw() -> None:
    """``-log(E)`` of the exponential draw (2 per element), the add to the logits and the divide by tau
    (2), then softmax over rows of 5: 6 rows * (3 * 5 - 1)."""
    _, tally = count_aten(lambda x: F.gumbel_softmax(x), torch.randn(6, 5))
    assert not tally.unsupported
    assert tally.cost.flops == 2 * N + 2 * N + 6 * 14


def test_an_aten_loss_called_directly_counts_the_broadcast_elements() -> None:
    """``aten.smooth_l1_loss`` / ``huber_loss`` of (1, 4) against (3, 4), no reduction: 12 elements."""
    _, smooth = count_aten(lambda a, b: torch.ops.aten.smooth_l1_loss(a, b, 0), torch.rand(1, 4), torch.rand(3, 4))
    _, huber = count_aten(lambda a, b: torch.ops.aten.huber_loss(a, b, 0), torch.rand(1, 4), torch.rand(3, 4))
    assert (smooth.cost.flops, huber.cost.flops) == (6 * 12, 5 * 12)
