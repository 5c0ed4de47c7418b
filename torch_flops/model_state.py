"""What a model is made of, kept aside and put back: its modules' attributes, and the hooks on them.

A symbolic trace runs every traced module's ``forward`` with proxies, so whatever ``forward`` writes to
its module (``self.running = ...``, ``self.cache.append(x)``, ``self._buffers[name] = ...``) would stay
behind as a proxy. :class:`ModelSnapshot` holds each module's attributes (its ``__dict__``, which
includes the tables of parameters, buffers, submodules and hooks) and the contents of every list, dict
and set among them, by identity. After a trace, :meth:`ModelSnapshot.changed` says which modules were
written to, and :meth:`ModelSnapshot.restore` puts back every attribute and every container's contents.

The same snapshot says whether a traced graph still describes the model
(:meth:`ModelSnapshot.matches`): the same modules at the same paths, of the same classes, with the same
``forward``, the same objects as attributes (parameters, buffers, submodules, hooks, flags) and the
same contents in their containers. Only ``training`` is left out: tracing and counting run in eval mode
whatever it is.

Values are compared by identity and held by the snapshot, so an object replaced by another cannot
be mistaken for it (a freed object's ``id`` may be reused; a held one's cannot). Containers are
followed one level deep: a list inside a list attribute is compared by identity only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_globals

_IGNORED = frozenset({"training"})
_CONTAINERS = (list, dict, set)  # dict subclasses (OrderedDict, the hook tables) included

FORWARD_HOOK_TABLES = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
"""The hook tables of a module that change what calling it does (the ``*_with_kwargs`` and
``*_always_called`` tables only flag entries of these)."""

_GLOBAL_HOOK_TABLES = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_backward_pre_hooks",
                       "_global_backward_hooks")


def _contents(value: Any) -> tuple[Any, ...]:
    """A container's contents as a tuple: a list's items, a dict's keys and values, a set's members."""
    if isinstance(value, dict):
        return (*value.keys(), *value.values())
    if isinstance(value, list):
        return tuple(value)
    return tuple(value)  # a set


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


class _ModuleState:
    """One module's attributes and the contents of its containers, as they were."""

    __slots__ = ("module", "cls", "forward", "attributes", "contents")

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.cls = type(module)
        self.forward = getattr(type(module), "forward", None)
        self.attributes = dict(module.__dict__)
        self.contents = {
            name: (value, _contents(value), value.copy())
            for name, value in self.attributes.items() if isinstance(value, _CONTAINERS)
        }

    def changed(self) -> list[str]:
        """The attributes assigned, deleted or added since, and the containers whose contents changed."""
        now = self.module.__dict__
        names = [name for name in now.keys() - self.attributes.keys() if name not in _IGNORED]
        for name, value in self.attributes.items():
            if name in _IGNORED:
                continue
            if name not in now or now[name] is not value:
                names.append(name)
            elif name in self.contents and not _same(_contents(value), self.contents[name][1]):
                names.append(name)
        return sorted(names)

    def matches(self, module: nn.Module) -> bool:
        if module is not self.module or type(module) is not self.cls or getattr(self.cls, "forward", None) is not self.forward:
            return False
        now = module.__dict__
        if len(now) != len(self.attributes):
            return False
        for name, value in self.attributes.items():
            if name in _IGNORED:
                continue
            if now.get(name, _MISSING) is not value:
                return False
        for value, contents, _ in self.contents.values():
            if not _same(_contents(value), contents):
                return False
        return True

    def restore(self) -> None:
        """Put back every attribute (the same objects) and every container's contents."""
        now = self.module.__dict__
        training = now.get("training")
        for name in now.keys() - self.attributes.keys():
            del now[name]
        for value, _, copy in self.contents.values():
            if isinstance(value, dict):
                if not _same(_contents(value), _contents(copy)):
                    value.clear()
                    value.update(copy)
            elif isinstance(value, list):
                if not _same(tuple(value), tuple(copy)):
                    value[:] = copy
            elif value != copy:
                value.clear()
                value.update(copy)
        now.update(self.attributes)
        if training is not None:
            now["training"] = training


_MISSING = object()


class ModelSnapshot:
    """The attributes of every module of a model, by path (see the module docstring)."""

    def __init__(self, named: Iterable[tuple[str, nn.Module]]) -> None:
        self.states = [(path, _ModuleState(module)) for path, module in named]

    def changed(self) -> dict[str, list[str]]:
        """``{module path: [attribute names]}`` for every module written to since the snapshot."""
        found = {}
        for path, state in self.states:
            names = state.changed()
            if names:
                found[path] = names
        return found

    def restore(self) -> None:
        for _, state in self.states:
            state.restore()

    def matches(self, named: Iterable[tuple[str, nn.Module]]) -> bool:
        """Whether ``named`` (a fresh walk of the model's modules) is the tree snapshotted, unchanged."""
        count = 0
        states = self.states
        for path, module in named:
            if count >= len(states):
                return False
            known_path, state = states[count]
            if path != known_path or not state.matches(module):
                return False
            count += 1
        return count == len(states)


def hooked_modules(named: Iterable[tuple[str, nn.Module]]) -> dict[str, str]:
    """``{path: why}`` for the modules that carry forward or backward hooks: a trace would call them
    with proxies, so such a module must run eagerly, as ``model(x)`` runs it."""
    found = {}
    for path, module in named:
        kinds = [table.strip("_").replace("_", " ")[:-1] for table in FORWARD_HOOK_TABLES if _hooks(module, table)]
        if kinds:
            found[path] = f"has {' and '.join(kinds)}s: kept whole so that they run as in model(x)"
    return found


def global_hooks() -> list[str]:
    """The kinds of global module hooks registered (``register_module_forward_hook`` ...), which run on
    every module call."""
    return [table.removeprefix("_global_").replace("_", " ")[:-1] for table in _GLOBAL_HOOK_TABLES
            if getattr(module_globals, table, None)]


def has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` runs hooks besides its ``forward``."""
    return any(_hooks(module, table) for table in FORWARD_HOOK_TABLES)


def _hooks(module: nn.Module, table: str) -> list[Any]:
    """The hooks in one of ``module``'s tables, less a lazy module's own pre-hook, which only creates
    its parameters on the first call (``nn.LazyLinear`` ...)."""
    hooks = getattr(module, table, None)
    if not hooks:
        return []
    return [hook for hook in hooks.values() if getattr(hook, "__func__", None) is not _LAZY_HOOK]


_LAZY_HOOK = nn.modules.lazy.LazyModuleMixin._infer_parameters


class RngState:
    """The CPU and initialised CUDA generators' states, to put back after runs that drew from them."""

    def __init__(self) -> None:
        self.cpu = torch.random.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def restore(self) -> None:
        torch.random.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


class Versions:
    """The version counters of ``tensors`` (an in-place write bumps a tensor's counter), to find which
    of them a run wrote to."""

    def __init__(self, tensors: Iterable[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        self.versions = [t._version for t in self.tensors]

    def written(self) -> list[torch.Tensor]:
        return [t for t, version in zip(self.tensors, self.versions) if t._version != version]


class AfterRun:
    """What one run left in the model, to put back after more runs: every module's attributes, the
    values of the parameters and buffers the run wrote in place (``written``), and the random number
    generators."""

    def __init__(self, named: Iterable[tuple[str, nn.Module]], written: Iterable[torch.Tensor]) -> None:
        self.snapshot = ModelSnapshot(named)
        self.values = [(t, t.detach().clone()) for t in written]
        self.rng = RngState()

    def restore(self) -> None:
        self.snapshot.restore()
        with torch.no_grad():
            for tensor, value in self.values:
                tensor.copy_(value)
        self.rng.restore()
