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

Time (with a :class:`~torch_flops.measure.Probe`): a marker is set at every owner switch, and the
stretch from one marker to the next goes to the owner that was running (:attr:`BackwardCostMode.seconds`);
the last runs to the end of the backward. On CPU a marker is ``perf_counter``. On CUDA it is a
zero-length profiler range, and a stretch's time is the device time of the kernels launched in it, on
any thread (autograd runs a CUDA backward on its own thread; :mod:`torch_flops.device_time`): no
synchronisation, the queue runs as in a plain backward.

Recomputation (activation checkpointing): the backward runs with grad mode off (no ``create_graph``),
while ``torch.utils.checkpoint`` runs its function again under ``torch.enable_grad()`` (reentrant or
not, nested or not), and only a recomputation runs a module's ``forward`` during a backward. So an aten
op dispatched with grad mode on, or while a module's ``forward`` runs, is recomputation: it is charged
to :attr:`BackwardCostMode.recomputed`, not to the backward. Its owner is the first forward record of
the innermost module running it (``recompute_owners``), else the op whose autograd node asked for it;
so a module's recomputation lands in that module's row. The autograd nodes a recomputed module makes
are claimed by that owner too, so a reentrant checkpoint's inner backward is charged as the plain
model's would be.

Memory of the step (:class:`SavedTensors`, :attr:`BackwardCostMode.peak_bytes`): the activations
autograd saves during the forward (distinct storages, parameters and buffers left out), and the most
the backward has allocated at once (the gradients and its temporaries).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

from torch_flops import memory
from torch_flops.fallback import AtenCostMode, AtenTally
from torch_flops.measure import Probe, tensors_in
from torch_flops.records import Cost
from torch_flops.registry import CostRegistry

UNATTRIBUTED = ""
"""The owner of autograd nodes no forward op made (the loss, ops outside the counted forward)."""


class AutogradOwners:
    """Which forward op made each autograd node."""

    def __init__(self) -> None:
        self.owners: dict[Any, str] = {}

    def claim(self, name: str, output: Any) -> list[Any]:
        """The autograd nodes ``output``'s tensors reach that no op has claimed are ``name``'s; return them."""
        stack = [t.grad_fn for t in tensors_in(output) if t.grad_fn is not None]
        owners = self.owners
        claimed = []
        while stack:
            node = stack.pop()
            if node in owners:
                continue
            owners[node] = name
            claimed.append(node)
            stack.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
        return claimed


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
    op whose autograd node is running (set by the pre-hooks of :meth:`hooks`), in :attr:`by_owner`, or,
    when it is recomputation, to the owner of the recomputed module in :attr:`recomputed` (see the
    module's docstring). With ``existing``, the storages the backward allocates (gradients,
    temporaries) are followed: :attr:`peak_bytes`. With ``probe``, :attr:`seconds` is the wall time
    of each owner, read at every switch.

    ``modules`` names the model's modules (``id(module)`` to qualified name) and ``recompute_owners``
    the record a module's recomputation is charged to (qualified name to record name)."""

    def __init__(
        self, registry: CostRegistry, owners: AutogradOwners, existing: Iterable[torch.Tensor] | None = None,
        probe: Probe | None = None, modules: Mapping[int, str] | None = None,
        recompute_owners: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(registry, existing=existing)
        self.owners = owners
        self.owner = UNATTRIBUTED
        self.by_owner: dict[str, AtenTally] = {}
        self.recomputed: dict[str, AtenTally] = {}
        self.seconds: dict[str, float] | None = {} if probe is not None else None
        self._probe = probe
        self._clock = UNATTRIBUTED  # whose time is running
        self._marks: list[tuple[str, Any]] = []  # (the owner whose time starts, the probe's marker)
        self._modules = modules or {}
        self._recompute_owners = recompute_owners or {}
        self._running_modules: list[str] = []  # the owners of the modules whose forward runs (recomputation)
        self._late_handles: list[Any] = []  # pre-hooks of the nodes a recomputation made

    def charge(self, label: str, cost: Cost | None) -> None:
        super().charge(label, cost)
        if self._running_modules or torch.is_grad_enabled():  # recomputation
            tallies, owner = self.recomputed, self._running_modules[-1] if self._running_modules else self.owner
        else:
            tallies, owner = self.by_owner, self.owner
        tally = tallies.get(owner)
        if tally is None:
            tally = tallies[owner] = AtenTally()
        tally.charge(label, cost)

    # -- the clock --------------------------------------------------------------------------------------
    def _switch(self, owner: str) -> None:
        """``owner`` runs from now: a marker of the probe starts its time (read by :meth:`read_clock`)."""
        if self._probe is not None and owner != self._clock:
            self._marks.append((owner, self._probe.marker()))
        self._clock = owner

    def start_clock(self) -> None:
        self._clock = self.owner
        if self._probe is not None:
            self._marks.append((self.owner, self._probe.marker()))

    def stop_clock(self) -> None:
        if self._probe is not None:
            self._marks.append((UNATTRIBUTED, self._probe.marker()))

    def read_clock(self) -> None:
        """Fill :attr:`seconds`: each stretch from one marker to the next is its owner's (call after the
        probe's ``finish``)."""
        if self._probe is None or self.seconds is None:
            return
        for (owner, start), (_, end) in zip(self._marks, self._marks[1:]):
            self.seconds[owner] = self.seconds.get(owner, 0.0) + self._probe.between_ms(start, end) / 1000.0

    # -- hooks ------------------------------------------------------------------------------------------
    def _running(self, owner: str) -> Callable[[Any], None]:
        def hook(grad_outputs: Any) -> None:
            self._running_modules.clear()  # no recomputation runs while an autograd node starts
            self._switch(owner)
            self.owner = owner

        return hook

    def hooks(self) -> list[Any]:
        """A pre-hook on every claimed autograd node; remove the returned handles when done."""
        return [node.register_prehook(self._running(owner)) for node, owner in self.owners.owners.items()]

    def _enter(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        stack = self._running_modules
        enclosing = stack[-1] if stack else self.owner
        self._claim(enclosing, args)  # what ran before this module, outside any module it runs
        owner = self._recompute_owners.get(self._modules.get(id(module), ""), "") or enclosing
        stack.append(owner)
        self._switch(owner)

    def _exit(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        stack = self._running_modules
        if not stack:
            return
        owner = stack.pop()
        self._claim(owner, output)
        self._switch(stack[-1] if stack else self.owner)

    def _claim(self, owner: str, values: Any) -> None:
        """The autograd nodes a recomputation made that ``values`` reach are ``owner``'s (a reentrant
        checkpoint runs them: its backward is charged as the plain model's would be)."""
        if torch.is_grad_enabled():
            self._late_handles += [node.register_prehook(self._running(owner)) for node in self.owners.claim(owner, values)]

    @contextlib.contextmanager
    def module_hooks(self) -> Iterator[None]:
        """Global module forward hooks that follow the modules a recomputation runs; the pre-hooks of the
        autograd nodes it made are removed on leaving too."""
        pre = module_hooks.register_module_forward_pre_hook(self._enter)
        post = module_hooks.register_module_forward_hook(self._exit, always_call=True)  # also when it stops early
        try:
            yield
        finally:
            pre.remove()
            post.remove()
            for handle in self._late_handles:
                handle.remove()
            self._late_handles.clear()


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
    existing: Iterable[torch.Tensor] = (), probe: Probe | None = None, modules: Mapping[int, str] | None = None,
    recompute_owners: Mapping[str, str] | None = None,
) -> BackwardCostMode:
    """Compute the gradients of ``loss`` for ``targets`` under a :class:`BackwardCostMode` (following the
    storages it allocates beyond ``existing``, timed with ``probe``); return it. Nothing is written to
    ``.grad``: ``torch.autograd.grad``, or, when a reentrant checkpoint is in the graph (it refuses
    ``grad``), ``torch.autograd.backward`` with every ``.grad`` it may write put back after."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
        raise ValueError(f"backward: the loss must be a one-element tensor that requires grad, got {_describe(loss)}")
    targets = list(targets)
    if not targets:
        raise ValueError("backward: no parameter or input requires grad, so there is nothing to differentiate")
    grad_output = torch.ones_like(loss)  # made here: the engine's own would be dispatched with grad mode on
    reentrant, leaves = _graph_of(loss)
    mode = BackwardCostMode(registry, owners, existing=existing, probe=probe, modules=modules, recompute_owners=recompute_owners)
    handles = mode.hooks()
    try:
        with mode, mode.module_hooks():
            if probe is not None:
                probe.start()
            mode.start_clock()
            if reentrant:
                _backward_keeping_grads(loss, grad_output, [*targets, *leaves])
            else:
                torch.autograd.grad(loss, targets, grad_output, allow_unused=True)
            mode.stop_clock()
    finally:
        for handle in handles:
            handle.remove()
    if probe is not None:
        probe.finish()
        mode.read_clock()
    return mode


def _graph_of(loss: torch.Tensor) -> tuple[bool, list[torch.Tensor]]:
    """Whether ``loss``'s autograd graph holds a reentrant checkpoint, and the leaf tensors it reaches."""
    reentrant, leaves, seen = False, [], set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        reentrant = reentrant or type(node).__name__ == "CheckpointFunctionBackward"
        variable = getattr(node, "variable", None)  # an AccumulateGrad node's leaf
        if isinstance(variable, torch.Tensor):
            leaves.append(variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return reentrant, leaves


def _backward_keeping_grads(loss: torch.Tensor, grad_output: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """``torch.autograd.backward``, the ``.grad`` of ``tensors`` (the leaves it may write) as they were after."""
    kept = {id(t): (t, t.grad) for t in tensors if t.is_leaf}
    try:
        for tensor, _ in kept.values():
            tensor.grad = None  # nothing to add into: the gradient is stored, as grad() would return it
        torch.autograd.backward(loss, grad_output)
    finally:
        for tensor, grad in kept.values():
            tensor.grad = grad


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}" + ("" if value.requires_grad else " that does not require grad")
    return type(value).__name__
