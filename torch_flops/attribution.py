"""Which module is running: the innermost module of a leaf whose ``forward`` is executing.

While a leaf node runs (:mod:`torch_flops.op_capture`), global forward hooks keep a stack of the leaf's
submodules that are running, so that every op the leaf makes is charged to the module whose own
``forward`` made it, exactly as a traced node is charged to the module whose ``forward`` created it.
The hooks exist only for that one call and are removed afterwards, whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.nn.modules import module as module_hooks


class ModuleStack:
    """The running submodules of ``leaf`` (qualified names under ``leaf_path``), innermost last.

    :attr:`top` is ``(path, class name)`` of the innermost one; at the leaf's own level it is the leaf
    (``('', '')`` when the leaf is the whole model, as for a traced node of the root's ``forward``)."""

    def __init__(self, leaf: nn.Module, leaf_path: str) -> None:
        self._owners: dict[int, tuple[str, str]] = {}
        for name, module in leaf.named_modules():
            path = f"{leaf_path}.{name}" if leaf_path and name else (name or leaf_path)
            self._owners.setdefault(id(module), (path, type(module).__name__ if path else ""))
        self._stack: list[tuple[str, str]] = [self._owners[id(leaf)]]
        self.top = self._stack[-1]

    def _enter(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        owner = self._owners.get(id(module))
        if owner is not None:
            self._stack.append(owner)
            self.top = owner

    def _exit(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        owner = self._owners.get(id(module))
        if owner is not None and len(self._stack) > 1 and self._stack[-1] == owner:
            self._stack.pop()
            self.top = self._stack[-1]

    @contextmanager
    def hooks(self) -> Iterator[ModuleStack]:
        pre = module_hooks.register_module_forward_pre_hook(self._enter)
        post = module_hooks.register_module_forward_hook(self._exit)
        try:
            yield self
        finally:
            pre.remove()
            post.remove()
