"""Elementwise arithmetic, comparisons and unary math: one FLOP per output element.

``x + y``, ``x * 2``, ``x += 1``, ``x > 0``, ``torch.exp(x)``, ``x.pow(2)``, ``torch.where(c, a, b)``,
``x.masked_fill(m, v)`` ... cost ``out_numel`` FLOPs, with broadcasting taken into account by pricing the
output. The operator, ``torch.*``, ``Tensor.*`` and aten forms (in-place ``add_`` included) share one
rule. ``torch.add`` / ``torch.sub`` with ``alpha != 1`` add the multiply: ``2 * out_numel``; ``lerp``
costs 3 per output, ``addcmul`` / ``addcdiv`` 2 (3 with ``value != 1``).

An op on Python scalars (shape arithmetic such as ``H == 224`` inside a traced ``assert``) produces
one value and costs 1, as in upstream torch_flops. Elementwise ops cost no MACs.

Worked example: ``Linear(5, 4)`` on ``(1, 5)`` then ``x += 1.``: 40 + 4 = 44 FLOPs.
"""

from __future__ import annotations

import operator

import torch

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, function_rule, method_rule, numel


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
    ((), (torch.fmax,), ("fmax",)),
    ((), (torch.fmin,), ("fmin",)),
    ((), (torch.atan2, torch.arctan2), ("atan2", "arctan2")),
    ((), (torch.hypot,), ("hypot",)),
    ((), (torch.copysign,), ("copysign",)),
    ((), (torch.xlogy,), ("xlogy",)),
    ((), (torch.logaddexp,), ("logaddexp",)),
    ((operator.and_, operator.iand), (torch.logical_and, torch.bitwise_and), ("logical_and", "bitwise_and", "and")),
    ((operator.or_, operator.ior), (torch.logical_or, torch.bitwise_or), ("logical_or", "bitwise_or", "or")),
    ((operator.xor, operator.ixor), (torch.logical_xor, torch.bitwise_xor), ("logical_xor", "bitwise_xor", "xor")),
    ((), (torch.isclose,), ("isclose",)),
    ((), (torch.heaviside,), ("heaviside",)),
    ((), (torch.polar,), ()),  # abs * (cos(angle) + i sin(angle)), one complex output element each
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
    ((torch.tan,), ("tan",)),
    ((torch.asin, torch.arcsin), ("asin", "arcsin")),
    ((torch.acos, torch.arccos), ("acos", "arccos")),
    ((torch.atan, torch.arctan), ("atan", "arctan")),
    ((torch.sinh,), ("sinh",)),
    ((torch.cosh,), ("cosh",)),
    ((torch.asinh, torch.arcsinh), ("asinh", "arcsinh")),
    ((torch.acosh, torch.arccosh), ("acosh", "arccosh")),
    ((torch.atanh, torch.arctanh), ("atanh", "arctanh")),
    ((torch.erf,), ("erf",)),
    ((torch.erfc,), ("erfc",)),
    ((torch.erfinv,), ("erfinv",)),
    ((torch.floor,), ("floor",)),
    ((torch.ceil,), ("ceil",)),
    ((torch.round,), ("round",)),
    ((torch.trunc, torch.fix), ("trunc", "fix")),
    ((torch.frac,), ("frac",)),
    ((torch.sign, torch.sgn), ("sign", "sgn")),
    ((torch.signbit,), ("signbit",)),
    ((operator.invert, torch.logical_not, torch.bitwise_not), ("logical_not", "bitwise_not", "__invert__")),
    ((torch.isnan,), ("isnan",)),
    ((torch.isinf,), ("isinf",)),
    ((torch.isfinite,), ("isfinite",)),
    ((torch.nan_to_num,), ("nan_to_num",)),
    ((torch.lgamma,), ("lgamma",)),
    ((torch.digamma,), ("digamma",)),
    ((torch.i0,), ("i0",)),
    ((torch.sinc,), ("sinc",)),
    ((torch.logit,), ("logit",)),
]

# aten names of the same ops (each also in place, `name_`), where they differ from the method stems
_BINARY_ATEN = (
    "add", "sub", "mul", "div", "floor_divide", "remainder", "fmod", "pow", "eq", "ne", "lt", "le", "gt",
    "ge", "maximum", "minimum", "fmax", "fmin", "atan2", "hypot", "copysign", "xlogy", "logaddexp",
    "logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor",
    "bitwise_left_shift", "bitwise_right_shift", "__and__", "__or__", "__xor__", "__lshift__", "__rshift__",
    "isclose", "true_divide", "multiply", "subtract", "divide", "heaviside", "polar",
)
_UNARY_ATEN = (
    "neg", "abs", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "reciprocal",
    "square", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erf",
    "erfc", "erfinv", "floor", "ceil", "round", "trunc", "frac", "sign", "sgn", "signbit", "logical_not",
    "bitwise_not", "isnan", "isinf", "isfinite", "nan_to_num", "lgamma", "digamma", "i0", "sinc", "logit",
    "special_erfcx",
)


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


def _with_inplace(names: tuple[str, ...]) -> list:
    return aten_ops(*names, *(f"{name}_" for name in names))


# [broadcast(a, b)] = a <op> b
@function_rule(*_BINARY_FUNCTIONS)
@method_rule(*_BINARY_METHODS)
@aten_rule(*_with_inplace(_BINARY_ATEN))
def binary(call: OpCall) -> Cost:
    """``out_numel``; ``2 * out_numel`` when ``alpha != 1`` scales the second operand. ``+`` / ``*`` on
    shapes and tuples (``x.size()[:-1] + (h, d)``) is sequence concatenation: 0."""
    if isinstance(call.output, (tuple, list)):
        return elementwise_cost(0)
    return elementwise_cost(numel(call.output), 1 if _alpha(call) == 1 else 2)


# [*] = f([*])
@function_rule(*_UNARY_FUNCTIONS)
@method_rule(*_UNARY_METHODS)
@aten_rule(*_with_inplace(_UNARY_ATEN))
def unary(call: OpCall) -> Cost:
    """``out_numel``."""
    return elementwise_cost(numel(call.output))


def clamp_cost(out_numel: int, bounds: int) -> Cost:
    """One comparison per element and given bound: ``out_numel * bounds``."""
    return elementwise_cost(out_numel, bounds)


# [*] = clamp([*], min=None, max=None); clamp_min / clamp_max have one bound
@function_rule(torch.clamp, torch.clip)
@method_rule("clamp", "clamp_", "clip", "clip_")
@aten_rule(*_with_inplace(("clamp", "clip")))
def clamp(call: OpCall) -> Cost:
    bounds = (call.arg(1, "min", None) is not None) + (call.arg(2, "max", None) is not None)
    return clamp_cost(numel(call.output), bounds)


@function_rule(torch.clamp_min, torch.clamp_max)
@method_rule("clamp_min", "clamp_min_", "clamp_max", "clamp_max_")
@aten_rule(*_with_inplace(("clamp_min", "clamp_max")))
def clamp_one_bound(call: OpCall) -> Cost:
    return clamp_cost(numel(call.output), 1)


# aten: rsub(self, other, alpha=1) = other - alpha * self
@aten_rule(*aten_ops("rsub"))
def rsub_aten(call: OpCall) -> Cost:
    return elementwise_cost(numel(call.output), 1 if call.arg(2, "alpha", 1) == 1 else 2)


# [broadcast] = where(condition, input, other): one select per output; the 1-argument where(condition)
# returns index tensors (a tuple) and costs 0.
# [*] = masked_fill([*], mask, value): one select per element
@function_rule(torch.where, torch.masked_fill)
@method_rule("where", "masked_fill", "masked_fill_")
@aten_rule(*aten_ops("where", "masked_fill", "masked_fill_"))
def select_elementwise(call: OpCall) -> Cost:
    if isinstance(call.output, (tuple, list)):
        return elementwise_cost(0)
    return elementwise_cost(numel(call.output))


# [broadcast] = lerp(start, end, weight): start + weight * (end - start), 3 per output
@function_rule(torch.lerp)
@method_rule("lerp", "lerp_")
@aten_rule(*_with_inplace(("lerp",)))
def lerp(call: OpCall) -> Cost:
    return elementwise_cost(numel(call.output), 3)


# [broadcast] = addcmul / addcdiv(input, tensor1, tensor2, value=1): input + value * t1 (*|/) t2
@function_rule(torch.addcmul, torch.addcdiv)
@method_rule("addcmul", "addcmul_", "addcdiv", "addcdiv_")
@aten_rule(*_with_inplace(("addcmul", "addcdiv")))
def addcmul(call: OpCall) -> Cost:
    """2 per output (the product or quotient and the add), 3 when ``value != 1``."""
    return elementwise_cost(numel(call.output), 2 if call.arg(3, "value", 1) == 1 else 3)


# bool = equal(self, other): a comparison per element of the two (same-shaped) tensors
@function_rule(torch.equal)
@method_rule("equal")
@aten_rule(*aten_ops("equal"))
def equal(call: OpCall) -> Cost:
    """A comparison per element; tensors of different shapes are unequal without any."""
    a, b = call.arg(0, "input"), call.arg(1, "other")
    return Cost(a.numel() if a.shape == b.shape else 0, 0)
