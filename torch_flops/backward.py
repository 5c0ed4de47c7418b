"""Backward FLOPs, each charged to the forward op whose autograd node ran it.

The forward runs with autograd on. After each op (a graph node, or a call inside a leaf), the autograd
nodes its outputs reach that no earlier op made are that op's (:class:`AutogradOwners`). The backward
then runs under :class:`BackwardCostMode`, an aten-level counter: a pre-hook on every autograd node
names the op whose node is about to run, and every aten op dispatched until the next one is charged
to it, priced by the aten rules (``torch_flops/rules/backward.py`` and the forward rules for the
``mm``, ``sum``, ... that backward formulas dispatch).

Only what autograd runs is counted: a frozen parameter (``requires_grad=False``) gets no weight
gradient, an input that does not require grad no input gradient. The gradients are computed with
``torch.autograd.grad`` for the parameters and inputs that require grad, so no ``.grad`` is written.

Memory of the step (:class:`SavedTensors`, :attr:`BackwardCostMode.peak_bytes`): the activations
autograd saves during the forward (distinct storages, parameters and buffers left out), and the most
the backward has allocated at once (the gradients and its temporaries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from torch_flops import memory
from torch_flops.fallback import AtenCostMode, AtenTally
from torch_flops.measure import tensors_in
from torch_flops.records import Cost
from torch_flops.registry import CostRegistry

UNATTRIBUTED = ""
"""The owner of autograd nodes no forward op made (the loss, ops outside the counted forward)."""


class AutogradOwners:
    """Which forward op made each autograd node."""

    def __init__(self) -> None:
        self.owners: dict[Any, str] = {}

    def claim(self, name: str, output: Any) -> None:
        """The autograd nodes ``output``'s tensors reach that no op has claimed are ``name``'s."""
        stack = [t.grad_fn for t in tensors_in(output) if t.grad_fn is not None]
        owners = self.owners
        while stack:
            node = stack.pop()
            if node in owners:
                continue
            owners[node] = name
            stack.extend(next_node for next_node, _ in node.next_functions if next_node is not None)


class SavedTensors:
    """The storages autograd saves for the backward pass while it is active (a ``saved_tensors_hooks``
    pair that keeps each tensor as it is), parameters and buffers (``excluded``) left out."""

    def __init__(self, excluded: Iterable[torch.Tensor]) -> None:
        self._excluded = set(memory.storages(excluded))
        self.storages: dict[int, int] = {}
        self.tensors: list[torch.Tensor] = []  # one per storage (alive until the backward anyway)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        for key, nbytes in memory.storages((tensor,)).items():
            if key not in self._excluded and key not in self.storages:
                self.storages[key] = nbytes
                self.tensors.append(tensor)
        return tensor

    def hooks(self) -> Any:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    @property
    def bytes(self) -> int:
        """Bytes of the distinct storages saved (a view and its base count once)."""
        return sum(self.storages.values())


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class BackwardCostMode(AtenCostMode):
    """The aten-level counter of a backward pass: every op is also charged to :attr:`owner`, the forward
    op whose autograd node is running (set by the pre-hooks of :meth:`hooks`). With ``existing``, the
    storages the backward allocates (gradients, temporaries) are followed: :attr:`peak_bytes`."""

    def __init__(self, registry: CostRegistry, owners: AutogradOwners, existing: Iterable[torch.Tensor] | None = None) -> None:
        super().__init__(registry, existing=existing)
        self.owners = owners
        self.owner = UNATTRIBUTED
        self.by_owner: dict[str, AtenTally] = {}

    def charge(self, label: str, cost: Cost | None) -> None:
        super().charge(label, cost)
        tally = self.by_owner.get(self.owner)
        if tally is None:
            tally = self.by_owner[self.owner] = AtenTally()
        tally.charge(label, cost)

    def _running(self, owner: str) -> Callable[[Any], None]:
        def hook(grad_outputs: Any) -> None:
            self.owner = owner

        return hook

    def hooks(self) -> list[Any]:
        """A pre-hook on every claimed autograd node; remove the returned handles when done."""
        return [node.register_prehook(self._running(owner)) for node, owner in self.owners.owners.items()]


def default_loss(output: Any) -> torch.Tensor:
    """The sum of every floating-point output that requires grad."""
    floating = [t for t in tensors_in(output) if t.is_floating_point() and t.requires_grad]
    if not floating:
        raise ValueError(
            "backward: the model's output has no floating-point tensor that requires grad (no parameter or input "
            "that requires grad reaches it); pass loss_fn= or make a parameter or input require grad"
        )
    loss = floating[0].sum()
    for tensor in floating[1:]:
        loss = loss + tensor.sum()
    return loss


def run_backward(
    loss: Any, targets: Iterable[torch.Tensor], registry: CostRegistry, owners: AutogradOwners,
    existing: Iterable[torch.Tensor] = (),
) -> BackwardCostMode:
    """Compute the gradients of ``loss`` for ``targets`` under a :class:`BackwardCostMode` (following the
    storages it allocates beyond ``existing``); return it. Nothing is written to ``.grad``."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
        raise ValueError(f"backward: the loss must be a one-element tensor that requires grad, got {_describe(loss)}")
    targets = list(targets)
    if not targets:
        raise ValueError("backward: no parameter or input requires grad, so there is nothing to differentiate")
    mode = BackwardCostMode(registry, owners, existing=existing)
    handles = mode.hooks()
    try:
        with mode:
            torch.autograd.grad(loss, targets, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return mode


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}" + ("" if value.requires_grad else " that does not require grad")
    return type(value).__name__
