"""Small in-repo models, and helpers over their records, shared by the tests."""

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SimpleModel(nn.Module):
    """The seed comparison model: Linear(5, 4), optionally followed by ``x += 1.``."""

    def __init__(self, add_one: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.layer = nn.Linear(5, 4, bias=bias)
        self.add_one = add_one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer(x)
        if self.add_one:
            x += 1.0
        return x


class SmallConvNet(nn.Module):
    """conv -> bn -> relu -> maxpool -> functional attention-ish head; every family once."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.bn(self.conv(x))))
        x = x.flatten(1)
        x = self.fc(x)
        return torch.softmax(x * 0.5, dim=-1)


class Branchy(nn.Module):
    """A submodule with data-dependent control flow: not symbolically traceable."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.inner(x)
        return x


class HasBranchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.block = Branchy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.pre(x))


def has_branchy_identity() -> HasBranchy:
    """``HasBranchy`` whose ``pre`` layer passes its input through unchanged (identity weight, zero
    bias), so the branch ``Branchy`` takes follows the input's sign."""
    model = HasBranchy()
    with torch.no_grad():
        model.pre.weight.copy_(torch.eye(4))
        model.pre.bias.zero_()
    return model


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        return self.proj(x) * scale + y


class NoParams(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.relu(a @ b)


class Op(nn.Module):
    """``forward(a[, b[, c]]) = fn(a[, b[, c]], **tensors)``; ``tensors`` are registered as buffers so FX
    reads them with ``get_attr`` (weights, biases, running statistics, masks)."""

    def __init__(self, fn: Callable[..., Any], **tensors: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        self.tensor_names = tuple(tensors)
        self.arity = len(inspect.signature(fn).parameters) - len(tensors)
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None, c: torch.Tensor | None = None) -> Any:
        inputs = (a, b, c)[: self.arity]
        return self.fn(*inputs, **{name: getattr(self, name) for name in self.tensor_names})


def costing(records: Any) -> list[Any]:
    """The records that carry a cost: forward, backward or recomputed FLOPs.

    Non-reentrant activation checkpointing makes empty placeholder tensors for its own bookkeeping on
    some torch versions (``torch.empty((0,), requires_grad=True)`` on 2.11, none on 2.14): calls of the
    checkpointed module that cost nothing, present or not by version, which tests of the model's own ops
    leave out this way."""
    return [r for r in records if r.flops or r.backward_flops or r.recompute_flops]
