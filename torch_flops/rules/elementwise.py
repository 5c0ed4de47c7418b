"""Elementwise arithmetic, comparisons and unary math: one FLOP per output element.

``x + y``, ``x * 2``, ``x += 1``, ``x > 0``, ``torch.exp(x)``, ``x.pow(2)`` ... cost ``out_numel``
FLOPs, with broadcasting taken into account by pricing the output. The operator, ``torch.*`` and
``Tensor.*`` forms (in-place ``add_`` included) share one rule. ``torch.add`` / ``torch.sub`` with
``alpha != 1`` add the multiply: ``2 * out_numel``.

An op on Python scalars (shape arithmetic such as ``H == 224`` inside a traced ``assert``) produces
one value and costs 1, as in upstream torch_flops. Elementwise ops cost no MACs.

Worked example: ``Linear(5, 4)`` on ``(1, 5)`` then ``x += 1.``: 40 + 4 = 44 FLOPs.
"""

from __future__ import annotations

import operator

import torch

from torch_flops.records import Cost
from torch_flops.registry import OpCall, function_rule, method_rule, numel


def elementwise_cost(out_numel: int, flops_per_element: int = 1) -> Cost:
    """``out_numel * flops_per_element`` FLOPs, no MACs."""
    return Cost(out_numel * flops_per_element, 0)


_BINARY = [
    # (operator forms, torch functions, Tensor method stems); each stem also gets `stem_`, `__stem__`, `__rstem__`
    ((operator.add, operator.iadd), (torch.add,), ("add",)),
    ((operator.sub, operator.isub), (torch.sub, torch.subtract), ("sub", "subtract")),
    ((operator.mul, operator.imul), (torch.mul, torch.multiply), ("mul", "multiply")),
    ((operator.truediv, operator.itruediv), (torch.div, torch.divide, torch.true_divide), ("div", "divide", "true_divide", "truediv")),
    ((operator.floordiv, operator.ifloordiv), (torch.floor_divide,), ("floor_divide", "floordiv")),
    ((operator.mod, operator.imod), (torch.remainder, torch.fmod), ("remainder", "fmod", "mod")),
    ((operator.pow, operator.ipow), (torch.pow,), ("pow",)),
    ((operator.eq,), (torch.eq,), ("eq",)),
    ((operator.ne,), (torch.ne,), ("ne",)),
    ((operator.lt,), (torch.lt,), ("lt",)),
    ((operator.le,), (torch.le,), ("le",)),
    ((operator.gt,), (torch.gt,), ("gt",)),
    ((operator.ge,), (torch.ge,), ("ge",)),
    ((), (torch.maximum,), ("maximum",)),
    ((), (torch.minimum,), ("minimum",)),
]

_UNARY = [
    # (functions, Tensor method stems); each stem also gets its in-place `stem_`
    ((operator.neg, torch.neg, torch.negative), ("neg", "negative")),
    ((operator.abs, torch.abs), ("abs",)),
    ((torch.exp,), ("exp",)),
    ((torch.exp2,), ("exp2",)),
    ((torch.expm1,), ("expm1",)),
    ((torch.log,), ("log",)),
    ((torch.log2,), ("log2",)),
    ((torch.log10,), ("log10",)),
    ((torch.log1p,), ("log1p",)),
    ((torch.sqrt,), ("sqrt",)),
    ((torch.rsqrt,), ("rsqrt",)),
    ((torch.reciprocal,), ("reciprocal",)),
    ((torch.square,), ("square",)),
    ((torch.sin,), ("sin",)),
    ((torch.cos,), ("cos",)),
    ((torch.erf,), ("erf",)),
]


def _method_names(stems: tuple[str, ...], dunder: bool) -> list[str]:
    """The ``Tensor`` methods among ``stem``, ``stem_`` and (binary ops) ``__stem__``, ``__rstem__``,
    ``__istem__``."""
    names = []
    for stem in stems:
        names += [stem, f"{stem}_"]
        if dunder:
            names += [f"__{stem}__", f"__r{stem}__", f"__i{stem}__"]
    return [name for name in names if hasattr(torch.Tensor, name)]


def _binary_names() -> tuple[list[object], list[str]]:
    functions: list[object] = []
    methods: list[str] = []
    for operators, torch_functions, stems in _BINARY:
        functions += [*operators, *torch_functions]
        methods += _method_names(stems, dunder=True)
    return functions, methods


def _unary_names() -> tuple[list[object], list[str]]:
    functions: list[object] = []
    methods: list[str] = []
    for unary_functions, stems in _UNARY:
        functions += unary_functions
        methods += _method_names(stems, dunder=False)
    return functions, methods


_BINARY_FUNCTIONS, _BINARY_METHODS = _binary_names()
_UNARY_FUNCTIONS, _UNARY_METHODS = _unary_names()


def _alpha(call: OpCall) -> float:
    """``alpha`` of ``add``/``sub``: a keyword, or the deprecated positional ``add(input, alpha, other)``."""
    if "alpha" in call.kwargs:
        return call.kwargs["alpha"]
    if len(call.args) == 3 and isinstance(call.args[1], (int, float)) and isinstance(call.args[2], torch.Tensor):
        return call.args[1]
    return 1


# [broadcast(a, b)] = a <op> b
@function_rule(*_BINARY_FUNCTIONS)
@method_rule(*_BINARY_METHODS)
def binary(call: OpCall) -> Cost:
    """``out_numel``; ``2 * out_numel`` when ``alpha != 1`` scales the second operand. ``+`` / ``*`` on
    shapes and tuples (``x.size()[:-1] + (h, d)``) is sequence concatenation: 0."""
    if isinstance(call.output, (tuple, list)):
        return elementwise_cost(0)
    return elementwise_cost(numel(call.output), 1 if _alpha(call) == 1 else 2)


# [*] = f([*])
@function_rule(*_UNARY_FUNCTIONS)
@method_rule(*_UNARY_METHODS)
def unary(call: OpCall) -> Cost:
    """``out_numel``."""
    return elementwise_cost(numel(call.output))


def clamp_cost(out_numel: int, bounds: int) -> Cost:
    """One comparison per element and given bound: ``out_numel * bounds``."""
    return elementwise_cost(out_numel, bounds)


# [*] = clamp([*], min=None, max=None); clamp_min / clamp_max have one bound
@function_rule(torch.clamp, torch.clip)
@method_rule("clamp", "clamp_", "clip", "clip_")
def clamp(call: OpCall) -> Cost:
    bounds = (call.arg(1, "min", None) is not None) + (call.arg(2, "max", None) is not None)
    return clamp_cost(numel(call.output), bounds)


@function_rule(torch.clamp_min, torch.clamp_max)
@method_rule("clamp_min", "clamp_min_", "clamp_max", "clamp_max_")
def clamp_one_bound(call: OpCall) -> Cost:
    return clamp_cost(numel(call.output), 1)
