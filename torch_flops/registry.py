"""The cost registry: which rule prices which FX node.

FX nodes carry three kinds of target, so rules are keyed three ways:

- ``call_module``: by module class, resolved along the MRO (a subclass of ``nn.Conv2d`` is a conv);
- ``call_function``: by the callable object itself (``torch.add`` and ``operator.add`` are registered
  together as aliases);
- ``call_method``: by method name, since that is all the node carries.

A fourth table prices ATen operators (``torch.ops.aten.mm`` ...), keyed by overload packet or by a
single overload. It serves the aten-level fallback (:mod:`torch_flops.fallback`), which counts a node
that has no rule of its own by the aten ops it dispatches. An aten op without an entry that is a view
(``OpOverload.is_view``) is known zero.

Every rule has one signature, ``rule(call: OpCall) -> Cost``. ``OpCall.arg`` binds an argument by
position *or* keyword, so ``F.linear(x, w, b)`` and ``F.linear(x, w, bias=b)`` are priced the same.
A rule registered with ``known_zero=True`` marks ops that do no arithmetic; a node with no rule at all is
``UNSUPPORTED`` (never a silent zero).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn
from torch._ops import OpOverload, OpOverloadPacket

from torch_flops.model_state import has_hooks, is_parametrised
from torch_flops.records import Cost

_MISSING = object()
T = TypeVar("T")


class OpCall:
    """What a rule sees of one executed op: its arguments, its output and, for modules, the module.

    For ``call_method`` nodes ``args[0]`` is the tensor the method is called on, exactly as FX stores it.
    (A plain class with slots rather than a dataclass: one is made for every node of every run.)
    """

    __slots__ = ("args", "kwargs", "output", "module")

    def __init__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any, module: nn.Module | None = None) -> None:
        self.args = args
        self.kwargs = kwargs
        self.output = output
        self.module = module

    def __repr__(self) -> str:
        return f"OpCall(args={self.args!r}, kwargs={self.kwargs!r}, output={self.output!r}, module={self.module!r})"

    def arg(self, index: int, name: str, default: Any = _MISSING) -> Any:
        """The argument passed as ``name=`` or at position ``index``, else ``default``."""
        if name in self.kwargs:
            return self.kwargs[name]
        if index < len(self.args):
            return self.args[index]
        if default is _MISSING:
            raise TypeError(f"missing argument {name!r} (position {index})")
        return default


RuleFn = Callable[[OpCall], Cost]


@dataclass(frozen=True)
class Rule:
    """A registered cost rule. ``known_zero`` rules price ops that do no arithmetic."""

    fn: RuleFn
    known_zero: bool = False

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


class CostRuleError(RuntimeError):
    """A cost rule raised or returned something that is not a cost; the message names rule and node."""


def valid_cost(cost: object) -> bool:
    """A :class:`Cost` of two non-negative ints (``bool`` is not a count)."""
    if type(cost) is Cost and type(cost.flops) is int and type(cost.macs) is int:  # the common case, quickly
        return cost.flops >= 0 and cost.macs >= 0
    return isinstance(cost, Cost) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (cost.flops, cost.macs)
    )


class DuplicateRuleError(ValueError):
    """A key already has a rule and ``replace=True`` was not given."""


@dataclass
class CostRegistry:
    """Rules for module classes, functions and method names."""

    modules: dict[type, Rule] = field(default_factory=dict)
    functions: dict[Callable[..., Any], Rule] = field(default_factory=dict)
    methods: dict[str, Rule] = field(default_factory=dict)
    aten: dict[OpOverloadPacket | OpOverload | str, Rule] = field(default_factory=dict)

    # -- registration -------------------------------------------------------------------------------
    def add_module_rule(self, classes: Iterable[type], rule: Rule, replace: bool = False) -> None:
        classes = list(classes)
        for cls in classes:  # check them all first: a rejected call registers nothing
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise TypeError(f"module rules are keyed by nn.Module subclasses, got {cls!r}")
            if cls in self.modules and self.modules[cls] != rule and not replace:
                raise DuplicateRuleError(
                    f"{cls.__qualname__} already has the rule {self.modules[cls].name}; pass replace=True to override it"
                )
        for cls in classes:
            self._put(self.modules, cls, rule, replace, cls.__qualname__)

    def add_function_rule(self, functions: Iterable[Callable[..., Any]], rule: Rule, replace: bool = False) -> None:
        for fn in functions:
            if not callable(fn):
                raise TypeError(f"function rules are keyed by callables, got {fn!r}")
            self._put(self.functions, fn, rule, replace, getattr(fn, "__name__", repr(fn)))

    def add_method_rule(self, names: Iterable[str], rule: Rule, replace: bool = False) -> None:
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"method rules are keyed by method names (str), got {name!r}")
            self._put(self.methods, name, rule, replace, name)

    def add_aten_rule(self, ops: Iterable[OpOverloadPacket | OpOverload | str], rule: Rule, replace: bool = False) -> None:
        """Rules for dispatcher operators: ``torch.ops.aten.mm`` (a packet), one overload, or a qualified
        name such as ``"torchvision::nms"`` for operators of libraries that may not be loaded yet."""
        for op in ops:
            if isinstance(op, str) and "::" not in op or not isinstance(op, (OpOverloadPacket, OpOverload, str)):
                raise TypeError(f"aten rules are keyed by torch.ops operators or 'namespace::name', got {op!r}")
            self._put(self.aten, op, rule, replace, str(op))

    def add_rule(self, key: Any, rule: Rule | RuleFn, replace: bool = False) -> None:
        """Register ``rule`` under ``key``, whose kind picks the table: an ``nn.Module`` subclass, a
        ``str`` (a ``Tensor`` method name; ``"namespace::op"`` names a dispatcher operator), a
        ``torch.ops`` operator, or any other callable."""
        if not isinstance(rule, Rule):
            if not callable(rule):
                raise TypeError(f"the rule for {key!r} must be callable (call -> Cost), got {rule!r}")
            rule = Rule(rule)
        if isinstance(key, nn.Module):
            raise TypeError(
                f"module rules are keyed by nn.Module subclasses, got an instance of {type(key).__name__}: pass the class"
            )
        if isinstance(key, type):
            self.add_module_rule([key], rule, replace)
        elif isinstance(key, str) and "::" not in key:
            self.add_method_rule([key], rule, replace)
        elif isinstance(key, (OpOverloadPacket, OpOverload)) or isinstance(key, str) and "::" in key:
            self.add_aten_rule([key], rule, replace)
        else:
            self.add_function_rule([key], rule, replace)

    def overlay(self, rules: Mapping[Any, Rule | RuleFn]) -> CostRegistry:
        """A copy of this registry with ``rules`` added, replacing any rule of the same key. The
        registry itself is not changed (this is how ``extra_rules`` applies to one counter)."""
        if not isinstance(rules, Mapping):
            raise TypeError(f"extra_rules must be a mapping {{key: rule}}, got {type(rules).__name__}")
        copy = CostRegistry(dict(self.modules), dict(self.functions), dict(self.methods), dict(self.aten))
        for key, rule in rules.items():
            copy.add_rule(key, rule, replace=True)
        return copy

    @staticmethod
    def _put(table: dict[Any, Rule], key: Any, rule: Rule, replace: bool, label: str) -> None:
        if key in table and table[key] != rule and not replace:
            raise DuplicateRuleError(f"{label} already has the rule {table[key].name}; pass replace=True to override it")
        table[key] = rule

    # -- lookup -------------------------------------------------------------------------------------
    def module_rule(self, module: nn.Module) -> Rule | None:
        """The rule of ``type(module)`` or of its nearest registered base class, when ``module`` runs
        that class's own ``forward`` and nothing more (:meth:`class_rule`, :func:`runs_class_forward`);
        ``None`` otherwise, so that the module is counted by what it runs."""
        rule = self.class_rule(type(module))
        return rule if rule is not None and runs_class_forward(module) else None

    def class_rule(self, cls: type) -> Rule | None:
        """The rule of ``cls`` or of its nearest registered base class, unless a class between them from
        outside PyTorch defines its own ``forward`` (a subclass of ``nn.Linear`` whose ``forward`` adds
        work is not a plain linear layer; PyTorch's own subclasses, ``nn.Dropout`` of a rule for
        ``_DropoutNd`` say, are what their base's rule was written for)."""
        for klass in cls.__mro__:
            if klass in self.modules:
                return self.modules[klass]
            if "forward" in vars(klass) and not klass.__module__.startswith("torch."):
                return None
        return None

    def function_rule(self, fn: Callable[..., Any]) -> Rule | None:
        try:
            return self.functions.get(fn)
        except TypeError:  # unhashable callable
            return None

    def method_rule(self, name: str) -> Rule | None:
        return self.methods.get(name)

    def aten_rule(self, op: OpOverload) -> Rule | None:
        """The rule of this overload, else of its packet; a view op without one is known zero."""
        rule = self.aten.get(op) or self.aten.get(op.overloadpacket) or self.aten.get(op._schema.name)
        if rule is None and op.is_view:
            return VIEW_RULE
        return rule


DEFAULT_REGISTRY = CostRegistry()


def _view(call: OpCall) -> Cost:
    """Known zero: an aten view op."""
    return Cost(0, 0)


VIEW_RULE = Rule(_view, known_zero=True)


def runs_class_forward(module: nn.Module) -> bool:
    """Whether calling ``module`` runs its class's ``forward`` and nothing more: no ``forward`` set on the
    instance, no parametrisation (``torch.nn.utils.parametrize``: the weight is computed on every
    read) and no forward or backward hooks (``weight_norm`` and ``spectral_norm`` work through a
    pre-hook, and a user's hook may compute too)."""
    return "forward" not in module.__dict__ and not is_parametrised(module) and not has_hooks(module)


def lookup_by_mro(table: Mapping[type, T], cls: type) -> T | None:
    """The value of ``cls`` or of its nearest base class in ``table``, else ``None``."""
    for base in cls.__mro__:
        if base in table:
            return table[base]
    return None


# -- decorators used by torch_flops.rules --------------------------------------------------------------
def module_rule(*classes: type, known_zero: bool = False, registry: CostRegistry | None = None):
    """Register the decorated ``fn(call) -> Cost`` for module classes."""

    def decorate(fn: RuleFn) -> RuleFn:
        (registry or DEFAULT_REGISTRY).add_module_rule(classes, Rule(fn, known_zero))
        return fn

    return decorate


def function_rule(*functions: Callable[..., Any], known_zero: bool = False, registry: CostRegistry | None = None):
    """Register the decorated ``fn(call) -> Cost`` for functions (all aliases at once)."""

    def decorate(fn: RuleFn) -> RuleFn:
        (registry or DEFAULT_REGISTRY).add_function_rule(functions, Rule(fn, known_zero))
        return fn

    return decorate


def method_rule(*names: str, known_zero: bool = False, registry: CostRegistry | None = None):
    """Register the decorated ``fn(call) -> Cost`` for ``Tensor`` method names."""

    def decorate(fn: RuleFn) -> RuleFn:
        (registry or DEFAULT_REGISTRY).add_method_rule(names, Rule(fn, known_zero))
        return fn

    return decorate


def aten_rule(*ops: OpOverloadPacket | OpOverload | str, known_zero: bool = False, registry: CostRegistry | None = None):
    """Register the decorated ``fn(call) -> Cost`` for aten operators. ``call.args`` / ``call.kwargs``
    follow the operator's schema; ``call.output`` is what it returned."""

    def decorate(fn: RuleFn) -> RuleFn:
        (registry or DEFAULT_REGISTRY).add_aten_rule(ops, Rule(fn, known_zero))
        return fn

    return decorate


def aten_ops(*names: str) -> list[OpOverloadPacket]:
    """``torch.ops.aten.<name>`` for each name this PyTorch build has (the set varies across versions)."""
    return [getattr(torch.ops.aten, name) for name in names if hasattr(torch.ops.aten, name)]


# -- shape helpers shared by the rules -----------------------------------------------------------------
_Tensor = torch.Tensor  # the exact type of most values: checked first, before isinstance


def numel(value: Any) -> int:
    """Elements of a tensor result; a Python scalar result (e.g. ``H == 224`` on a shape) counts 1."""
    if type(value) is _Tensor or isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (int, float, bool, complex)):
        return 1
    raise TypeError(f"expected a tensor or a number, got {type(value).__name__}")


def module_tensor(module: nn.Module, name: str) -> Any:
    """``getattr(module, name)`` for a parameter or buffer (or ``None`` registered in its place), read
    from the module's own tables when it is registered there, which is where ``nn.Module.__getattr__``
    finds it, at a fraction of its cost. Anything else (a parametrized weight, an attribute) comes from
    ``getattr``."""
    parameters = module._parameters
    if name in parameters:
        return parameters[name]
    buffers = module._buffers
    if name in buffers:
        return buffers[name]
    return getattr(module, name)


def first_output(value: Any) -> Any:
    """The main result of an op that returns a tuple (``max_pool2d_with_indices``, ``native_layer_norm``,
    ...): its first element; any other value unchanged."""
    if type(value) is _Tensor:
        return value
    return value[0] if isinstance(value, (tuple, list)) else value


def shape_of(value: Any) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (int, float, bool, complex)):
        return ()
    raise TypeError(f"expected a tensor or a number, got {type(value).__name__}")


def prod(values: Iterable[int]) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result
