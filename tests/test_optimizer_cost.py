"""Optimizer step FLOPs and state bytes (``torch_flops/optimizer_cost.py``): a real ``step()`` of each
optimizer runs under :class:`~torch_flops.fallback.AtenCostMode`, single-tensor (``foreach=False``),
``foreach=True`` and ``fused=True`` where this torch has a CPU fused kernel, and its aten count equals
the closed form. (The fused kernels are priced by the closed form itself, so for them the test checks
that the rule reads the kernel's arguments and that the step counter, incremented outside the kernel,
is counted once.)
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from features import works
from torch_flops.fallback import AtenCostMode
from torch_flops.optimizer_cost import (
    adam_flops_per_element,
    optimizer_state_bytes,
    optimizer_step_cost,
    sgd_flops_per_element,
)
from torch_flops.rules import foreach  # noqa: F401  (registers the foreach and fused rules)

ELEMENTS, TENSORS = 5 * 3 + 7, 2


def _params() -> list[torch.Tensor]:
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def _fused_on_cpu(cls: type) -> bool:
    return works(lambda: cls(_params(), lr=0.1, fused=True).step())


IMPLEMENTATIONS = ["foreach=False", "foreach=True", "fused=True"]

CASES = [
    # (id, class, hyperparameters, FLOPs per element on step 1, on step 2, + per tensor)
    ("sgd", torch.optim.SGD, {}, 2, 2, 0),
    ("sgd-momentum", torch.optim.SGD, {"momentum": 0.9}, 2, 2 + 2, 0),
    ("sgd-dampening", torch.optim.SGD, {"momentum": 0.9, "dampening": 0.5}, 2, 2 + 3, 0),
    ("sgd-nesterov-decay", torch.optim.SGD, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}, 2 + 2 + 2, 2 + 2 + 2 + 2, 0),
    ("sgd-maximize", torch.optim.SGD, {"maximize": True}, 2 + 1, 2 + 1, 0),
    ("adam", torch.optim.Adam, {}, 13, 13, 1),
    ("adam-decay", torch.optim.Adam, {"weight_decay": 0.1}, 13 + 2, 13 + 2, 1),
    ("adam-amsgrad", torch.optim.Adam, {"amsgrad": True}, 13 + 1, 13 + 1, 1),
    ("adamw", torch.optim.AdamW, {}, 13 + 1, 13 + 1, 1),  # weight_decay 0.01 by default
    ("adamw-no-decay", torch.optim.AdamW, {"weight_decay": 0.0}, 13, 13, 1),
    ("adamw-amsgrad-maximize", torch.optim.AdamW, {"amsgrad": True, "maximize": True}, 13 + 1 + 1 + 1, 13 + 1 + 1 + 1, 1),
]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("cls, hyper, first, later, per_tensor", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_step_aten_count_equals_closed_form(
    cls: type, hyper: dict[str, Any], first: int, later: int, per_tensor: int, implementation: str
) -> None:
    flag, value = implementation.split("=")
    if flag == "fused" and not _fused_on_cpu(cls):
        pytest.skip(f"this torch has no fused CPU {cls.__name__}")
    if hyper.get("weight_decay") == 0.0 and cls is torch.optim.AdamW and implementation == "foreach=False" and _decays_at_zero():
        pytest.skip("this torch's single-tensor AdamW multiplies by 1 - lr * weight_decay even at weight_decay=0 (torch 2.4)")
    optimizer = cls(_params(), lr=0.1, **hyper, **{flag: value == "True"})
    for expected_per_element in (first, later):
        closed_form = optimizer_step_cost(optimizer).flops
        mode = AtenCostMode()
        with mode:
            optimizer.step()
        assert not mode.tally.unsupported, dict(mode.tally.unsupported)
        assert mode.tally.cost.flops == closed_form == ELEMENTS * expected_per_element + TENSORS * per_tensor


def _decays_at_zero() -> bool:
    """Whether a single-tensor AdamW step with ``weight_decay=0`` costs what one with decay costs."""
    costs = []
    for decay in (0.0, 0.01):
        optimizer = torch.optim.AdamW(_params(), lr=0.1, weight_decay=decay, foreach=False)
        with AtenCostMode() as mode:
            optimizer.step()
        costs.append(mode.tally.cost.flops)
    return costs[0] == costs[1]


def test_closed_forms_and_worked_examples() -> None:
    layer = nn.Linear(64, 32)  # 2,048 + 32 = 2,080 parameters in 2 tensors
    assert optimizer_step_cost(torch.optim.SGD, layer, lr=0.1).flops == 2 * 2_080
    assert optimizer_step_cost(torch.optim.SGD, layer, lr=0.1, momentum=0.9).flops == 4 * 2_080
    assert optimizer_step_cost(torch.optim.SGD, layer, lr=0.1, momentum=0.9, first_step=True).flops == 2 * 2_080
    assert optimizer_step_cost(torch.optim.Adam, layer).flops == 13 * 2_080 + 2
    assert optimizer_step_cost(torch.optim.AdamW, layer).flops == 14 * 2_080 + 2
    assert sgd_flops_per_element(momentum=0.9, dampening=0.1, weight_decay=1e-4, nesterov=False) == 2 + 2 + 3
    assert adam_flops_per_element(weight_decay=0.1, amsgrad=True, decoupled=True) == 15


def test_param_groups_of_an_instance() -> None:
    a, b = nn.Linear(4, 4), nn.Linear(4, 2)  # 20 and 10 parameters
    optimizer = torch.optim.Adam([{"params": a.parameters()}, {"params": b.parameters(), "weight_decay": 0.1}])
    assert optimizer_step_cost(optimizer).flops == 20 * 13 + 2 + 10 * 15 + 2


def test_unknown_optimizer_and_misuse_are_errors() -> None:
    with pytest.raises(TypeError, match="RMSprop"):
        optimizer_step_cost(torch.optim.RMSprop, nn.Linear(2, 2))
    with pytest.raises(TypeError):
        optimizer_step_cost(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), nn.Linear(2, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cls, hyper, buffers, step_tensor", [
    (torch.optim.SGD, {}, 0, False),
    (torch.optim.SGD, {"momentum": 0.9}, 1, False),
    (torch.optim.Adam, {}, 2, True),
    (torch.optim.AdamW, {}, 2, True),
    (torch.optim.AdamW, {"amsgrad": True}, 3, True),
], ids=["sgd", "sgd-momentum", "adam", "adamw", "adamw-amsgrad"])
def test_state_bytes_match_a_real_optimizer(cls: type, hyper: dict[str, Any], buffers: int, step_tensor: bool, dtype: torch.dtype) -> None:
    layer = nn.Linear(64, 32).to(dtype)
    for p in layer.parameters():
        p.grad = torch.zeros_like(p)
    optimizer = cls(layer.parameters(), lr=0.1, **hyper)
    optimizer.step()
    real = sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
               if isinstance(t, torch.Tensor))
    expected = buffers * 2_080 * torch.empty((), dtype=dtype).element_size() + (2 * 4 if step_tensor else 0)
    assert optimizer_state_bytes(optimizer) == real == expected
    assert optimizer_state_bytes(cls, layer, lr=0.1, **hyper) == expected
