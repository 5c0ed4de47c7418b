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
whatever it is. Once told which modules the graph runs eagerly (:meth:`ModelSnapshot.focus`), it checks
those only for what the graph depends on (class, ``forward``, submodules, hooks), so the check at
every ``propagate`` costs in proportion to the modules traced into.

This module reads ``nn.Module``'s own tables (``_modules``, ``_forward_hooks`` ...): the one place in
the library that does.

Values are compared by identity and held by the snapshot, so an object replaced by another cannot
be mistaken for it (a freed object's ``id`` may be reused; a held one's cannot). Containers are
followed one level deep: a list inside a list attribute is compared by identity only.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_globals

_IGNORED = "training"  # the one attribute tracing and counting set themselves (eval mode)
_CONTAINERS = frozenset({dict, collections.OrderedDict, list, set})  # the hook tables are OrderedDicts
_TABLES = ("_parameters", "_buffers", "_modules")  # reported by the names of their entries
_MISSING = object()

FORWARD_HOOK_TABLES = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
"""The hook tables of a module that change what calling it does (the ``*_with_kwargs`` and
``*_always_called`` tables only flag entries of these)."""
_EAGER_TABLES = ("_modules", *FORWARD_HOOK_TABLES)  # what a graph depends on in a module it runs eagerly

_GLOBAL_HOOK_TABLES = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_backward_pre_hooks",
                       "_global_backward_hooks")


def _same_contents(container: Any, copy: Any) -> bool:
    """Whether ``container`` holds the very objects ``copy`` (a copy made earlier) holds, in order."""
    if len(container) != len(copy):
        return False
    if not container:
        return True
    if type(container) is set:
        return container == copy
    if isinstance(container, dict):
        return list(container) == list(copy) and list(map(id, container.values())) == list(map(id, copy.values()))
    return list(map(id, container)) == list(map(id, copy))


def _under(path: str, roots: set[str]) -> bool:
    """Whether the module at ``path`` is one of ``roots`` or inside one ('' is the whole model)."""
    if "" in roots:
        return True
    while path:
        if path in roots:
            return True
        path = path.rpartition(".")[0]
    return False


def _flat_contents(containers: list[Any], indices: list[int]) -> list[Any]:
    """The ids of what the containers at ``indices`` hold, and the keys of the dicts among them, in one
    list: two such lists are equal when every one of those containers holds the same objects (a
    container of another length shifts the rest, so the lists differ)."""
    flat: list[Any] = []
    for k in indices:
        container = containers[k]
        if isinstance(container, dict):
            flat += container.keys()
            flat += map(id, container.values())
        elif type(container) is set:
            flat += sorted(map(id, container))
        else:
            flat += map(id, container)
        flat.append(len(container))
    return flat


class ModelSnapshot:
    """The attributes of every module of a model (see the module docstring), by path.

    Attributes are compared by the ``id`` of every value, in C (``map(id, ...)``): the snapshot holds
    each value, so no id can be reused by another object while it lives. A snapshot is taken at every
    trace and compared at every run, so the state is kept in flat lists made by comprehensions, and
    compared list against list; only the modules found to differ are looked at one by one."""

    def __init__(self, named: Iterable[tuple[str, nn.Module]]) -> None:
        named = list(named)
        self.paths = [path for path, _ in named]
        self.modules = [module for _, module in named]
        self.classes = list(map(type, self.modules))
        self.attributes = [module.__dict__.copy() for module in self.modules]
        self.ids = [list(map(id, attributes.values())) for attributes in self.attributes]
        # every list, dict and set attribute: its module's index, itself, and a copy (() when empty:
        # most of a module's tables are empty, and copying them would be most of the cost)
        held = [(i, name, value) for i, attributes in enumerate(self.attributes) for name, value in attributes.items()
                if type(value) in _CONTAINERS]
        self.owners = [i for i, _, _ in held]
        self.names = [name for _, name, _ in held]
        self.containers = [value for _, _, value in held]
        self.copies = [value.copy() if value else () for value in self.containers]
        self.lengths = list(map(len, self.containers))
        self.filled = [k for k, length in enumerate(self.lengths) if length]
        self.filled_contents = _flat_contents(self.copies, self.filled)
        self.forwards = {cls: getattr(cls, "forward", None) for cls in self.classes}  # each class's forward, once
        self._traced: list[int] | None = None  # set by focus(): the modules traced into, by index

    def _differing(self) -> list[int]:
        """The indices of the modules whose attributes or containers differ from the snapshot (their
        ``training`` flags aside)."""
        found = set()
        ids = [list(map(id, module.__dict__.values())) for module in self.modules]
        if ids != self.ids:
            found.update(i for i, (now, then) in enumerate(zip(ids, self.ids)) if now != then and not self._only_training(i))
        lengths = list(map(len, self.containers))
        if lengths != self.lengths:
            found.update(self.owners[k] for k, (now, then) in enumerate(zip(lengths, self.lengths)) if now != then)
        if _flat_contents(self.containers, self.filled) != self.filled_contents:
            found.update(self.owners[k] for k in self.filled if not _same_contents(self.containers[k], self.copies[k]))
        return sorted(found)

    def _only_training(self, i: int) -> bool:
        now, then = self.modules[i].__dict__, self.attributes[i]
        return now.keys() == then.keys() and all(now[name] is value for name, value in then.items() if name != _IGNORED)

    def _changed(self, i: int) -> list[str]:
        """What module ``i`` had assigned, deleted or added since, by name: an attribute, a container
        attribute whose contents changed, or an entry of its parameter, buffer or submodule table."""
        now, then = self.modules[i].__dict__, self.attributes[i]
        names = list(now.keys() - then.keys())
        names += [name for name, value in then.items() if name != _IGNORED and now.get(name, _MISSING) is not value]
        for k, owner in enumerate(self.owners):
            value, copy = self.containers[k], self.copies[k]
            if owner != i or _same_contents(value, copy):
                continue
            name = next(name for name, held in then.items() if held is value)
            if name in _TABLES:
                copy = copy or {}
                names += [key for key in value.keys() | copy.keys() if value.get(key, _MISSING) is not copy.get(key, _MISSING)]
            else:
                names.append(name)
        return sorted(set(names))

    def changed(self) -> dict[str, list[str]]:
        """``{module path: [names]}`` for every module written to since the snapshot."""
        return {self.paths[i]: self._changed(i) for i in self._differing()}

    def restore(self) -> None:
        """Put back every module's attributes (the same objects) and its containers' contents."""
        differing = set(self._differing())
        if not differing:
            return
        for k, owner in enumerate(self.owners):
            value, copy = self.containers[k], self.copies[k]
            if owner in differing and not _same_contents(value, copy):
                if isinstance(value, list):
                    value[:] = copy
                else:
                    value.clear()
                    value.update(copy or {})
        for i in differing:
            now = self.modules[i].__dict__
            training = now.get(_IGNORED)
            for name in now.keys() - self.attributes[i].keys():
                del now[name]
            now.update(self.attributes[i])
            if training is not None:
                now[_IGNORED] = training

    def focus(self, eager_paths: Iterable[str]) -> None:
        """Say which modules a graph runs eagerly (those at ``eager_paths`` and inside them): for those,
        :meth:`matches` checks only what the graph depends on, their class, ``forward``, submodules and
        hooks (and the number of their attributes, which a ``forward`` set on the instance changes),
        since the graph calls them as they are at run time. Every other module (the ones traced into)
        is checked whole."""
        eager_paths = set(eager_paths)
        eager = [_under(path, eager_paths) for path in self.paths]
        self._traced = [i for i, flag in enumerate(eager) if not flag]
        self._eager = [i for i, flag in enumerate(eager) if flag]
        traced = set(self._traced)
        self._traced_ids = [self.ids[i] for i in self._traced]
        self._eager_lengths = [len(self.attributes[i]) for i in self._eager]
        self._watched = [k for k, (owner, name) in enumerate(zip(self.owners, self.names)) if owner in traced or name in _EAGER_TABLES]
        self._watched_lengths = [self.lengths[k] for k in self._watched]
        self._watched_filled = [k for k in self._watched if self.lengths[k]]

    def matches(self) -> bool:
        """Whether the model is still the tree snapshotted, unchanged: the same modules (each module's
        submodules are the same objects), of the same classes with the same ``forward``, holding the
        same attributes; after :meth:`focus`, the modules run eagerly only as described there."""
        if list(map(type, self.modules)) != self.classes:
            return False
        if any(getattr(cls, "forward", None) is not forward for cls, forward in self.forwards.items()):
            return False
        if self._traced is None:
            return not self._differing()
        modules = self.modules
        ids = [list(map(id, modules[i].__dict__.values())) for i in self._traced]
        if ids != self._traced_ids:
            if any(now != then and not self._only_training(i) for i, now, then in zip(self._traced, ids, self._traced_ids)):
                return False
        if [len(modules[i].__dict__) for i in self._eager] != self._eager_lengths:
            return False
        containers = self.containers
        if [len(containers[k]) for k in self._watched] != self._watched_lengths:
            return False
        return all(_same_contents(containers[k], self.copies[k]) for k in self._watched_filled)


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
    attributes = module.__dict__
    if not any([attributes.get(table) for table in FORWARD_HOOK_TABLES]):
        return False
    return any(_hooks(module, table) for table in FORWARD_HOOK_TABLES)


def is_parametrised(module: nn.Module) -> bool:
    """Whether ``module`` has a parametrised tensor (``torch.nn.utils.parametrize``): what
    ``parametrize.is_parametrized`` says, read from the submodule table without an attribute miss."""
    return isinstance(module._modules.get("parametrizations"), nn.ModuleDict)


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
