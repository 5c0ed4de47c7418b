"""The aten-level counter: price any code by the ATen operators it dispatches.

A node that has no rule of its own (a helper function, a user module kept as a leaf, a method no rule
knows) is run under :class:`AtenCostMode`, a ``TorchDispatchMode`` that sees every aten op the call
dispatches after PyTorch's own decompositions (``F.linear`` arrives as ``aten.addmm``, ``nn.Conv2d`` as
``aten.convolution``). Each aten op is priced with the registry's aten rules, which share their
formulas with the FX-level rules, so a convolution costs the same whichever path counted it.

The node is unsupported only when one of its aten ops has no rule; those ops are named. A call that
dispatches no aten op at all (Python-level bookkeeping, a helper that returns ``None``) costs 0.

The same mode run over a whole model (:func:`count_aten`) gives an independent total to check the
FX-level count against. The mode also follows the storages its ops allocate (freed when their last
tensor is), so the peak memory inside a node that runs as one unit is known on any device.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

from torch_flops import memory
from torch_flops.measure import tensors_in
from torch_flops.records import ZERO_COST, AtenOpCost, Cost
from torch_flops.registry import DEFAULT_REGISTRY, CostRegistry, CostRuleError, OpCall, Rule, valid_cost


class AtenRuleError(CostRuleError):
    """An aten rule raised or returned something that is not a cost."""


def aten_label(op: OpOverload) -> str:
    """``aten.mm``, ``torchvision.nms``: namespace and packet name, without the overload."""
    return f"{op.namespace}.{op.overloadpacket.__name__}"


@dataclass
class AtenTally:
    """What one run under :class:`AtenCostMode` dispatched and what it cost."""

    cost: Cost = ZERO_COST
    by_op: dict[str, Cost] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    unsupported: Counter[str] = field(default_factory=Counter)

    def charge(self, label: str, cost: Cost | None) -> None:
        """One call of ``label``: its cost added, or, ``None``, counted as unsupported (no rule)."""
        if cost is None:
            self.unsupported[label] += 1
        else:
            self.add(label, cost)

    def add(self, label: str, cost: Cost) -> None:
        self.cost = self.cost + cost
        self.by_op[label] = self.by_op.get(label, ZERO_COST) + cost
        self.calls[label] += 1

    def op_costs(self) -> tuple[AtenOpCost, ...]:
        """What each aten operator cost, summed over its calls, in order of first call."""
        return tuple(AtenOpCost(label, self.calls[label], cost.flops, cost.macs) for label, cost in self.by_op.items())


class Allocations:
    """The storages that ops allocate (those not among ``existing``' storages), each alive while a
    tensor holds it: :attr:`live_bytes` now and :attr:`peak_bytes` at most."""

    def __init__(self, existing: Iterable[torch.Tensor]) -> None:
        self._existing = set(memory.storages(existing))
        self._holders: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0

    def track(self, output: Any) -> None:
        """Count the new storages ``output`` holds (a sparse tensor's: its indices' and values'); each is
        freed when its last tensor is."""
        for tensor in tensors_in(output):
            for key, nbytes in memory.storages((tensor,)).items():
                if key in self._existing:
                    continue
                if key not in self._holders:
                    self._holders[key] = 0
                    self._sizes[key] = nbytes
                    self.live_bytes += nbytes
                    self.peak_bytes = max(self.peak_bytes, self.live_bytes)
                self._holders[key] += 1
                weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self._holders[key] -= 1
        if not self._holders[key]:
            del self._holders[key]
            self.live_bytes -= self._sizes.pop(key)


class AllocationMode(TorchDispatchMode):
    """Runs every aten op unchanged and follows the storages it allocates (:class:`Allocations`)."""

    def __init__(self, existing: Iterable[torch.Tensor]) -> None:
        super().__init__()
        self.allocations = Allocations(existing)

    def __torch_dispatch__(self, func: OpOverload, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        output = func(*args, **(kwargs or {}))
        self.allocations.track(output)
        return output


class AtenCostMode(TorchDispatchMode):
    """Runs every aten op unchanged and adds its cost to :attr:`tally` (through :meth:`charge`, which a
    subclass may extend to charge costs elsewhere too).

    With ``existing`` (the tensors alive before the call) the mode also follows the storages its ops
    allocate: :attr:`peak_bytes`.
    """

    def __init__(
        self,
        registry: CostRegistry | None = None,
        existing: Iterable[torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry or DEFAULT_REGISTRY
        self.tally = AtenTally()
        self._rules: dict[OpOverload, Rule | None] = {}
        self.allocations = Allocations(existing) if existing is not None else None

    @property
    def peak_bytes(self) -> int:
        """The most the ops run here had allocated at once (0 unless ``existing`` was given)."""
        return self.allocations.peak_bytes if self.allocations is not None else 0

    def __torch_dispatch__(self, func: OpOverload, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if self.allocations is not None:
            self.allocations.track(output)
        try:
            rule = self._rules[func]
        except KeyError:
            rule = self._rules[func] = self.registry.aten_rule(func)
        label = aten_label(func)
        cost = None if rule is None else ZERO_COST if rule.known_zero else _apply(rule, label, OpCall(args, kwargs, output))
        self.charge(label, cost)
        return output

    def charge(self, label: str, cost: Cost | None) -> None:
        """Add one op's cost to the tally (``None``: the op has no rule)."""
        self.tally.charge(label, cost)


def _apply(rule: Rule, label: str, call: OpCall) -> Cost:
    try:
        cost = rule.fn(call)
    except Exception as error:
        raise AtenRuleError(f"aten rule {rule.name} failed on {label}: {type(error).__name__}: {error}") from error
    if not valid_cost(cost):
        raise AtenRuleError(f"aten rule {rule.name} returned {cost!r} for {label}; expected a Cost of two non-negative ints")
    return cost


def count_aten(
    fn: Callable[..., Any], *args: Any, registry: CostRegistry | None = None, **kwargs: Any
) -> tuple[Any, AtenTally]:
    """Run ``fn(*args, **kwargs)`` under ``torch.no_grad()`` and :class:`AtenCostMode`; return its
    output and the tally. ``fn`` may be a whole model: this is the independent aten-level count."""
    mode = AtenCostMode(registry)
    with torch.no_grad(), mode:
        output = fn(*args, **kwargs)
    return output, mode.tally
