"""``_foreach_*`` ops (a list of tensors at once) and the fused optimizer kernels.

``_foreach_<op>`` / ``_foreach_<op>_`` cost the sum, over the list, of the per-tensor op's rule
(``aten.<op>``) applied to the ``i``-th tensor of every list argument, the ``i``-th number of a scalar
list, and a shared scalar or tensor as it is: ``_foreach_add_(params, grads, alpha=-lr)`` costs what one
``add_(p, g, alpha=-lr)`` per tensor costs. The per-tensor rule is the default registry's.

The fused optimizer kernels (``_fused_sgd_``, ``_fused_adam_``, ``_fused_adamw_``) are priced by the
closed forms of :mod:`torch_flops.optimizer_cost` per element of ``self`` (``+ 1`` per element to
unscale the gradient by a ``grad_scale``); their step counters are incremented outside the kernel, by a
``_foreach_add_`` of their own.

Worked example: ``_foreach_addcdiv_([p1, p2], [m1, m2], [d1, d2], [-0.1, -0.2])`` with 5 and 7
elements: ``addcdiv`` with ``value != 1`` is 3 per element: ``3 * 12 = 36``.
"""

from __future__ import annotations

from typing import Any

import torch

from torch_flops.optimizer_cost import adam_flops_per_element, sgd_flops_per_element
from torch_flops.records import ZERO_COST, Cost
from torch_flops.registry import DEFAULT_REGISTRY, OpCall, aten_ops, aten_rule

# per-tensor ops whose _foreach_ forms are priced by their rule
FOREACH_BASES = (
    "add", "sub", "mul", "div", "addcmul", "addcdiv", "lerp", "maximum", "minimum", "clamp_min", "clamp_max",
    "pow", "neg", "abs", "sqrt", "rsqrt", "exp", "expm1", "log", "log1p", "log2", "log10", "reciprocal",
    "sign", "sigmoid", "tanh", "sin", "cos", "tan", "erf", "erfc", "floor", "ceil", "round", "trunc",
    "frac", "norm", "max",
)
# _foreach_ forms that copy or fill: no arithmetic
FOREACH_ZERO = ("_foreach_zero_", "_foreach_copy_", "_foreach_copy")


def _item(value: Any, i: int, n: int) -> Any:
    return value[i] if isinstance(value, (list, tuple)) and len(value) == n else value


def _foreach_rule(base: str):
    packet = getattr(torch.ops.aten, base)

    def rule(call: OpCall) -> Cost:
        per_tensor = DEFAULT_REGISTRY.aten.get(packet)
        if per_tensor is None:
            raise LookupError(f"aten.{base} has no rule in the default registry")
        tensors = call.arg(0, "self")
        n = len(tensors)
        outputs = call.output if isinstance(call.output, (list, tuple)) and len(call.output) == n else tensors
        total = ZERO_COST
        for i in range(n):
            args = tuple(_item(a, i, n) for a in call.args)
            kwargs = {k: _item(v, i, n) for k, v in call.kwargs.items()}
            total = total + per_tensor.fn(OpCall(args, kwargs, outputs[i]))
        return total

    rule.__name__ = rule.__qualname__ = f"foreach_{base}"
    rule.__doc__ = f"``_foreach_{base}[_]``: the sum over the list of ``aten.{base}``'s rule."
    return rule


for _base in FOREACH_BASES:
    aten_rule(*aten_ops(f"_foreach_{_base}", f"_foreach_{_base}_"))(_foreach_rule(_base))


@aten_rule(*aten_ops(*FOREACH_ZERO), known_zero=True)
def foreach_copy(call: OpCall) -> Cost:
    """Known zero: fills and copies."""
    return ZERO_COST


def _elements(call: OpCall) -> int:
    return sum(t.numel() for t in call.arg(0, "self"))


def _unscale(call: OpCall) -> int:
    return 1 if call.kwargs.get("grad_scale") is not None else 0


# () = _fused_sgd_(self[], grads[], momentum_buffer_list[], *, weight_decay, momentum, lr, dampening, nesterov,
#     maximize, is_first_step, grad_scale=None, found_inf=None)
@aten_rule(*aten_ops("_fused_sgd_"))
def fused_sgd(call: OpCall) -> Cost:
    """:func:`~torch_flops.optimizer_cost.sgd_flops_per_element` per element (+ 1 with a ``grad_scale``)."""
    k = call.kwargs
    per = sgd_flops_per_element(k["momentum"], k["dampening"], k["weight_decay"], k["nesterov"], k["maximize"],
                                k["is_first_step"])
    return Cost(_elements(call) * (per + _unscale(call)), 0)


# () = _fused_adam[w]_(self[], grads[], exp_avgs[], exp_avg_sqs[], max_exp_avg_sqs[], state_steps[], *, lr, beta1,
#     beta2, weight_decay, eps, amsgrad, maximize, grad_scale=None, found_inf=None)
def _fused_adam_rule(decoupled: bool):
    def rule(call: OpCall) -> Cost:
        k = call.kwargs
        per = adam_flops_per_element(k["weight_decay"], k["amsgrad"], k["maximize"], decoupled)
        return Cost(_elements(call) * (per + _unscale(call)), 0)

    rule.__name__ = rule.__qualname__ = "fused_adamw" if decoupled else "fused_adam"
    rule.__doc__ = ":func:`~torch_flops.optimizer_cost.adam_flops_per_element` per element (+ 1 with a ``grad_scale``)."
    return rule


aten_rule(*aten_ops("_fused_adam_"))(_fused_adam_rule(decoupled=False))
aten_rule(*aten_ops("_fused_adamw_"))(_fused_adam_rule(decoupled=True))
