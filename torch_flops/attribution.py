"""Attribute the aten-level costs of a leaf module to the modules inside it.

While a leaf ``call_module`` node runs under the aten-level counter, global forward hooks keep a stack
of the leaf's submodules that are running; every priced aten op is charged to the top of the stack.
The hooks exist only for that one call and are removed afterwards, whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.modules import module as module_hooks

from torch_flops.measure import tensors_in
from torch_flops.records import ModuleCost, Shape


@dataclass
class _Entry:
    path: str
    module_class: str
    flops: int = 0
    macs: int = 0
    calls: int = 0
    input_shape: Shape | None = None
    output_shape: Shape | None = None


def _first_shape(value: Any) -> Shape | None:
    return next((tuple(t.shape) for t in tensors_in(value)), None)


class ModuleAttribution:
    """Charges costs to the innermost running submodule of ``leaf`` (qualified names under ``leaf_path``)."""

    def __init__(self, leaf: nn.Module, leaf_path: str) -> None:
        self.paths: dict[int, str] = {}
        self.entries: dict[str, _Entry] = {}
        for name, module in leaf.named_modules():
            path = f"{leaf_path}.{name}" if leaf_path and name else (name or leaf_path)
            self.paths.setdefault(id(module), path)
            self.entries.setdefault(path, _Entry(path, type(module).__name__))
        self.stack: list[str] = [leaf_path]
        self.order: list[str] = []

    def on_cost(self, label: str, cost: Any) -> None:
        entry = self.entries[self.stack[-1]]
        entry.flops += cost.flops
        entry.macs += cost.macs

    def _enter(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        path = self.paths.get(id(module))
        if path is None:
            return
        self.stack.append(path)
        entry = self.entries[path]
        entry.calls += 1
        if entry.calls == 1:
            self.order.append(path)
        if entry.input_shape is None:
            entry.input_shape = _first_shape(args)

    def _exit(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        path = self.paths.get(id(module))
        if path is None or self.stack[-1] != path:
            return
        self.stack.pop()
        entry = self.entries[path]
        if entry.output_shape is None:
            entry.output_shape = _first_shape(output)

    @contextmanager
    def hooks(self) -> Iterator[ModuleAttribution]:
        pre = module_hooks.register_module_forward_pre_hook(self._enter)
        post = module_hooks.register_module_forward_hook(self._exit)
        try:
            yield self
        finally:
            pre.remove()
            post.remove()

    def module_costs(self) -> tuple[ModuleCost, ...]:
        """One entry per module that ran, in order of first call."""
        entries = [self.entries[path] for path in self.order]
        return tuple(ModuleCost(e.path, e.module_class, e.flops, e.macs, e.calls, e.input_shape, e.output_shape) for e in entries)
