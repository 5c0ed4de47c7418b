"""FLOPs and state memory of one optimizer step, in closed form.

Counted as the rest of torch_flops counts elementwise work (``docs/conventions.md``): an add,
multiply, divide, sqrt or comparison costs 1 per element, an add with ``alpha != 1`` 2, ``lerp`` 3,
``addcmul`` / ``addcdiv`` with ``value != 1`` 3. Numbers computed on the host (bias corrections,
``lr / bias_correction``) cost nothing. Per parameter element, for PyTorch's single-tensor
(``foreach=False``) algorithm, which the ``foreach`` path and the fused kernels compute too:

SGD (``lr``, ``momentum``, ``dampening``, ``weight_decay``, ``nesterov``, ``maximize``)::

    maximize: g = -g                            1
    weight_decay: g = g + wd * p                2
    momentum, first step: b = clone(g)          0
    momentum, later: b = m * b + (1 - d) * g    2, 3 with dampening != 0
    nesterov: g = g + m * b                     2
    p = p - lr * g                              2

Adam / AdamW (``weight_decay``, ``amsgrad``, ``maximize``)::

    maximize: g = -g                                       1
    Adam weight_decay: g = g + wd * p                      2
    AdamW weight_decay: p = p * (1 - lr * wd)              1
    m = lerp(m, g, 1 - beta1)                              3
    v = v * beta2 + (1 - beta2) * g * g                    1 + 3
    amsgrad: v_max = max(v_max, v)                         1
    denom = sqrt(v or v_max) / sqrt(bias_correction2) + eps   3
    p = p - step_size * m / denom                          3

so 13 per element (+ 1 amsgrad, + 2 Adam's or + 1 AdamW's weight decay, + 1 maximize), plus 1 per
parameter tensor for its step counter (``step += 1`` on a one-element tensor). SGD: 2 per element
(+ 2 weight decay, + 2 or 3 momentum after the first step, + 2 nesterov, + 1 maximize).

Worked examples: ``Linear(64, 32)`` (2,080 parameters in 2 tensors): SGD ``2 * 2,080 = 4,160``;
SGD with momentum 0.9 after its first step ``4 * 2,080 = 8,320``; Adam ``13 * 2,080 + 2 = 27,042``;
AdamW (weight decay 0.01 by default) ``14 * 2,080 + 2 = 29,122``.

State: SGD with momentum keeps 1 buffer per parameter (its dtype), Adam / AdamW 2 (``exp_avg``,
``exp_avg_sq``), 3 with amsgrad, plus a one-element ``step`` tensor per parameter (float32; float64
when that is the default dtype).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from torch_flops.records import Cost

SUPPORTED = ("SGD", "Adam", "AdamW")


def sgd_flops_per_element(
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    first_step: bool = False,
) -> int:
    """SGD: ``2`` for ``p - lr * g``; ``+ 1`` maximize, ``+ 2`` weight decay, ``+ 2`` nesterov,
    ``+ 2`` momentum (``3`` with dampening) on every step but the first (which copies ``g``)."""
    flops = 2 + int(bool(maximize)) + (2 if weight_decay else 0)
    if momentum:
        if not first_step:
            flops += 2 if dampening == 0 else 3
        if nesterov:
            flops += 2
    return flops


def adam_flops_per_element(weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False, decoupled: bool = False) -> int:
    """Adam (``decoupled=False``) / AdamW: ``13``; ``+ 1`` amsgrad, ``+ 1`` maximize; weight decay
    ``+ 2`` (Adam, ``g + wd * p``) or ``+ 1`` (AdamW, ``p * (1 - lr * wd)``)."""
    flops = 13 + int(bool(amsgrad)) + int(bool(maximize))
    if weight_decay:
        flops += 1 if decoupled else 2
    return flops


def _class_name(optimizer_or_class: Any) -> str:
    cls = optimizer_or_class if isinstance(optimizer_or_class, type) else type(optimizer_or_class)
    for klass in cls.__mro__:  # a user subclass of torch.optim.AdamW counts as AdamW
        if klass.__module__.startswith("torch.optim") and klass.__name__ in SUPPORTED:
            return klass.__name__
    raise TypeError(f"optimizer_step_cost knows {', '.join(SUPPORTED)}; got {cls.__name__}")


def _as_params(params: Iterable[Any] | nn.Module) -> list[torch.Tensor]:
    if isinstance(params, nn.Module):
        return list(params.parameters())
    if isinstance(params, torch.Tensor):
        return [params]
    out: list[torch.Tensor] = []
    for p in params:
        if isinstance(p, dict):  # a param group
            out += _as_params(p["params"])
        else:
            out.append(p)
    return out


def _groups(optimizer_or_class: Any, params: Any, hyper: dict[str, Any]) -> list[tuple[dict[str, Any], list[torch.Tensor]]]:
    """(hyperparameters, parameters) per group: an optimizer's own groups, or a class's defaults (as
    this PyTorch sets them) overridden by ``hyper`` over ``params``."""
    if isinstance(optimizer_or_class, torch.optim.Optimizer):
        if params is not None or hyper:
            raise TypeError("pass params and hyperparameters with an optimizer class, not with an optimizer instance")
        return [(group, list(group["params"])) for group in optimizer_or_class.param_groups]
    if not (isinstance(optimizer_or_class, type) and issubclass(optimizer_or_class, torch.optim.Optimizer)):
        raise TypeError(f"expected a torch.optim optimizer or its class, got {optimizer_or_class!r}")
    if params is None:
        raise TypeError("params is required with an optimizer class")
    probe = optimizer_or_class([torch.zeros(1, requires_grad=True)], **hyper)  # this torch's defaults, validated
    return [(probe.defaults, _as_params(params))]


def _decoupled(name: str, group: dict[str, Any]) -> bool:
    return name == "AdamW" or bool(group.get("decoupled_weight_decay", False))


def _sgd_first_step(optimizer_or_class: Any, tensors: list[torch.Tensor]) -> bool:
    """An SGD instance whose parameters have no momentum buffer yet is at its first step; a class is not."""
    if not isinstance(optimizer_or_class, torch.optim.Optimizer):
        return False
    return all(optimizer_or_class.state.get(p, {}).get("momentum_buffer") is None for p in tensors)


def optimizer_step_cost(
    optimizer_or_class: Any, params: Iterable[Any] | nn.Module | None = None, *, first_step: bool | None = None, **hyper: Any
) -> Cost:
    """FLOPs of one ``step()`` (0 MACs: the update is elementwise), by the closed forms above.

    ``optimizer_or_class``: a ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` instance (its groups and
    hyperparameters are used; every parameter is counted as if it had a gradient) or one of those
    classes with ``params`` (tensors, param groups or an ``nn.Module``) and hyperparameters as keywords
    (the class's defaults fill the rest). ``first_step`` matters to SGD with momentum only (the first
    step copies the gradient into the buffer); by default an instance's own state decides and a class
    prices a later step.
    """
    name = _class_name(optimizer_or_class)
    flops = 0
    for group, tensors in _groups(optimizer_or_class, params, hyper):
        elements = sum(p.numel() for p in tensors)
        if name == "SGD":
            first = _sgd_first_step(optimizer_or_class, tensors) if first_step is None else first_step
            flops += elements * sgd_flops_per_element(
                group["momentum"], group["dampening"], group["weight_decay"], group["nesterov"],
                group.get("maximize", False), first)
        else:
            per = adam_flops_per_element(group["weight_decay"], group["amsgrad"], group.get("maximize", False),
                                         _decoupled(name, group))
            flops += elements * per + len(tensors)  # + the step counter of each tensor
    return Cost(flops, 0)


def _step_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def optimizer_state_bytes(optimizer_or_class: Any, params: Iterable[Any] | nn.Module | None = None, **hyper: Any) -> int:
    """Bytes of the optimizer state once a step has run: per parameter, its element size times its
    numel for each buffer (SGD: 1 with momentum, else 0; Adam / AdamW: 2, 3 with amsgrad), and for
    Adam / AdamW a one-element ``step`` tensor (4 bytes; 8 when the default dtype is float64)."""
    name = _class_name(optimizer_or_class)
    total = 0
    for group, tensors in _groups(optimizer_or_class, params, hyper):
        if name == "SGD":
            buffers, step_bytes = (1 if group["momentum"] else 0), 0
        else:
            buffers, step_bytes = (3 if group["amsgrad"] else 2), torch.empty((), dtype=_step_dtype()).element_size()
        total += sum(buffers * p.numel() * p.element_size() + step_bytes for p in tensors)
    return total
