"""Activations: a fixed number of FLOPs per output element, 0 MACs.

Principle: a named transcendental primitive (exp, log, tanh, sigmoid, erf) costs 1, and each arithmetic
operation or comparison of the textbook formula costs 1. ReLU and GELU keep upstream torch_flops'
price of 1 and LeakyReLU its price of 4.

============  ===  ==========================================
activation    per  formula counted
============  ===  ==========================================
ReLU          1    max(x, 0)
GELU          1    primitive
Sigmoid       1    primitive
Tanh          1    primitive
Threshold     1    x > t ? x : v
ReLU6         2    min(max(x, 0), 6)
Hardtanh      2    min(max(x, lo), hi)
SiLU          2    x * sigmoid(x)
LogSigmoid    2    log(sigmoid(x))
Tanhshrink    2    x - tanh(x)
Hardshrink    2    |x| > l ? x : 0
Softsign      3    x / (1 + |x|)
Softshrink    3    |x| > l ? x - sign(x) l : 0
Softplus      3    log(1 + exp(x)); +2 (multiply, divide) when beta != 1
Hardsigmoid   4    min(max(x + 3, 0), 6) / 6
LeakyReLU     4    upstream's price (compare, multiply, select)
PReLU, RReLU  4    as LeakyReLU
ELU           4    x > 0 ? x : a (exp(x) - 1)
CELU          5    x > 0 ? x : a (exp(x / a) - 1)
SELU          5    s * ELU(x)
Hardswish     5    x * min(max(x + 3, 0), 6) / 6
Mish          5    x * tanh(log(1 + exp(x)))
GLU           2    a * sigmoid(b), per output element
============  ===  ==========================================

Worked example: ``nn.SiLU()`` on ``(2, 10)``: 20 elements * 2 = 40 FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torch_flops.records import Cost
from torch_flops.registry import (
    OpCall,
    RuleFn,
    aten_ops,
    aten_rule,
    first_output,
    function_rule,
    method_rule,
    module_rule,
    numel,
)


def activation_cost(out_numel: int, flops_per_element: int) -> Cost:
    """``out_numel * flops_per_element`` FLOPs; activations cost no MACs."""
    return Cost(out_numel * flops_per_element, 0)


def _per_element(name: str, flops_per_element: int) -> RuleFn:
    def rule(call: OpCall) -> Cost:
        return activation_cost(numel(first_output(call.output)), flops_per_element)

    rule.__name__ = rule.__qualname__ = f"{name}_rule"
    rule.__doc__ = f"{name}: {flops_per_element} FLOP(s) per output element."
    return rule


# (name, FLOPs per element, module classes, functions, Tensor method names, aten ops)
_TABLE: list[tuple[str, int, tuple[type, ...], tuple[object, ...], tuple[str, ...], tuple[str, ...]]] = [
    ("relu", 1, (nn.ReLU,), (F.relu, F.relu_, torch.relu, torch.relu_), ("relu", "relu_"), ("relu", "relu_")),
    ("gelu", 1, (nn.GELU,), (F.gelu,), (), ("gelu", "gelu_")),
    ("sigmoid", 1, (nn.Sigmoid,), (torch.sigmoid, F.sigmoid), ("sigmoid", "sigmoid_"), ("sigmoid", "sigmoid_")),
    ("tanh", 1, (nn.Tanh,), (torch.tanh, F.tanh), ("tanh", "tanh_"), ("tanh", "tanh_")),
    ("threshold", 1, (nn.Threshold,), (F.threshold, F.threshold_), (), ("threshold", "threshold_")),
    ("hardtanh", 2, (nn.Hardtanh,), (F.hardtanh, F.hardtanh_), (), ("hardtanh", "hardtanh_")),
    ("relu6", 2, (nn.ReLU6,), (F.relu6,), (), ("relu6", "relu6_")),
    ("silu", 2, (nn.SiLU,), (F.silu,), (), ("silu", "silu_")),
    ("logsigmoid", 2, (nn.LogSigmoid,), (F.logsigmoid,), (), ("log_sigmoid", "log_sigmoid_forward")),
    ("tanhshrink", 2, (nn.Tanhshrink,), (F.tanhshrink,), (), ()),
    ("hardshrink", 2, (nn.Hardshrink,), (F.hardshrink,), (), ("hardshrink",)),
    ("softsign", 3, (nn.Softsign,), (F.softsign,), (), ()),
    ("softshrink", 3, (nn.Softshrink,), (F.softshrink,), (), ("softshrink",)),
    ("hardsigmoid", 4, (nn.Hardsigmoid,), (F.hardsigmoid,), (), ("hardsigmoid", "hardsigmoid_")),
    ("leaky_relu", 4, (nn.LeakyReLU,), (F.leaky_relu, F.leaky_relu_), (), ("leaky_relu", "leaky_relu_")),
    ("prelu", 4, (nn.PReLU, nn.RReLU), (F.prelu, F.rrelu), (), ("prelu", "_prelu_kernel", "rrelu", "rrelu_with_noise")),
    ("elu", 4, (nn.ELU,), (F.elu, F.elu_), (), ()),
    ("celu", 5, (nn.CELU,), (F.celu,), (), ("celu", "celu_")),
    ("selu", 5, (nn.SELU,), (F.selu,), (), ("selu", "selu_")),
    ("hardswish", 5, (nn.Hardswish,), (F.hardswish,), (), ("hardswish", "hardswish_")),
    ("mish", 5, (nn.Mish,), (F.mish,), (), ("mish", "mish_")),
    ("glu", 2, (nn.GLU,), (F.glu,), (), ("glu",)),
]

PER_ELEMENT_FLOPS: dict[str, int] = {name: per for name, per, *_ in _TABLE}

for _name, _per, _modules, _functions, _methods, _aten in _TABLE:
    _rule = _per_element(_name, _per)
    if _modules:
        module_rule(*_modules)(_rule)
    if _functions:
        function_rule(*_functions)(_rule)
    if _methods:
        method_rule(*_methods)(_rule)
    if _aten:
        aten_rule(*aten_ops(*_aten))(_rule)


# aten: [*] = elu(self, alpha=1, scale=1, input_scale=1); ELU, and SELU and CELU when they arrive as it
@aten_rule(*aten_ops("elu", "elu_"))
def elu_aten(call: OpCall) -> Cost:
    """ELU's 4 per element, + 1 for a ``scale`` (SELU) and + 1 for an ``input_scale`` (CELU) not 1."""
    extra = (call.arg(2, "scale", 1) != 1) + (call.arg(3, "input_scale", 1) != 1)
    return activation_cost(numel(call.output), 4 + extra)


def softplus_cost(out_numel: int, beta: float) -> Cost:
    """``log(1 + exp(beta x)) / beta``: 3 per element, 5 when ``beta != 1`` (the multiply and divide)."""
    return activation_cost(out_numel, 3 if beta == 1 else 5)


@module_rule(nn.Softplus)
def softplus_module(call: OpCall) -> Cost:
    return softplus_cost(numel(call.output), call.module.beta)


# F.softplus(input, beta=1, threshold=20); aten.softplus(self, beta=1, threshold=20)
@function_rule(F.softplus)
@aten_rule(*aten_ops("softplus"))
def softplus_function(call: OpCall) -> Cost:
    return softplus_cost(numel(call.output), call.arg(1, "beta", 1))
