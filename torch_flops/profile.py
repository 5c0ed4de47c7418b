"""The layer-wise view: ``profile(model, tensor) -> (macs, params, LayerInfo)``.

Computed by the same FX engine as the node view, so functional ops inside a layer's ``forward``
(``@``, ``torch.matmul``, ``F.linear``, ``F.conv*``, ``F.scaled_dot_product_attention``, ...) are
counted on the row of the innermost module that runs them. MACs follow ``docs/conventions.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from torch_flops import aggregate, render
from torch_flops.arguments import check_bool
from torch_flops.engine import TorchFLOPsByFX
from torch_flops.layers import layer_rows
from torch_flops.planning import NodePlan
from torch_flops.records import LayerRecord, NodeRecord
from torch_flops.registry import lookup_by_mro
from torch_flops.render import LayerTotal

CustomCounter = Callable[[nn.Module, tuple[Any, ...], Any], int | None]
_ABSENT = object()


@dataclass(frozen=True)
class LayerInfo:
    """Per-layer rows and totals of one profile run; ``summary()`` renders them."""

    layers: tuple[LayerRecord, ...]
    total: LayerTotal
    records: tuple[NodeRecord, ...]

    @property
    def total_macs(self) -> int:
        return self.total.macs

    @property
    def total_params(self) -> int:
        return self.total.params

    def summary(self, kind: str = "text", fmt: str = "raw") -> str:
        """The layer table as ``kind`` "text" | "csv" | "md", numbers as ``fmt`` "raw" | "clever" | "ratio"
        (percent of the total); with the backward MACs when the run counted a backward pass
        (``profile(model, x, backward=True)``)."""
        return render.to_layer_table(self.layers, self.total, kind, fmt, backward=aggregate.has_backward(self.records))

    def __str__(self) -> str:
        return self.summary()


def _custom_macs(module: nn.Module, counter: CustomCounter, args: tuple[Any, ...], output: Any) -> int:
    """Call a user counter ``(module, inputs, output) -> MACs``; a thop-style counter that returns
    ``None`` and adds to ``module.total_ops`` is read from there. Whatever ``total_ops`` the module had
    (attribute, buffer or parameter) is put back exactly as it was."""
    saved = {table: getattr(module, table).pop("total_ops") for table in ("_buffers", "_parameters")
             if "total_ops" in getattr(module, table)}
    saved_attribute = vars(module).pop("total_ops", _ABSENT)
    vars(module)["total_ops"] = torch.zeros(1, dtype=torch.float64)
    try:
        result = counter(module, args, output)
        macs = vars(module)["total_ops"] if result is None else result
    finally:
        del vars(module)["total_ops"]
        if saved_attribute is not _ABSENT:
            vars(module)["total_ops"] = saved_attribute
        for table, value in saved.items():
            getattr(module, table)["total_ops"] = value
    if isinstance(macs, torch.Tensor):
        macs = macs.item()
    if isinstance(macs, float) and macs.is_integer():
        macs = int(macs)
    if not isinstance(macs, int) or isinstance(macs, bool):
        raise TypeError(f"custom counter {getattr(counter, '__name__', counter)!r} for {type(module).__name__} "
                        f"returned {macs!r}; expected an int number of MACs")
    return macs


def _custom_counter_for(module: nn.Module | None, custom_ops: Mapping[type, CustomCounter]) -> CustomCounter | None:
    return None if module is None else lookup_by_mro(custom_ops, type(module))


def profile(
    model: nn.Module,
    tensor: torch.Tensor | tuple[Any, ...] | list[Any] | None = None,
    custom_ops: Mapping[type, CustomCounter] | None = None,
    verbose: bool = True,
    **kwargs: Any,
) -> tuple[int, int, LayerInfo]:
    """Profile ``model`` on ``tensor`` (one tensor or a tuple of positional inputs; keyword inputs as
    ``**kwargs``) and return ``(macs, params, layers_info)``.

    One row per leaf module in order of first call (MACs summed over calls, parameters once), plus a
    row for any other module whose own ``forward`` runs ops that cost MACs, runs ops no rule knows, or
    that owns parameters directly. Rows sum to the totals.

    ``custom_ops`` maps a module class to ``fn(module, inputs, output) -> MACs`` and beats the built-in
    rule for that class (and its subclasses). ``verbose=True`` prints the layers that ran ops no rule
    knows; ``verbose=False`` prints nothing. ``params`` counts learnable parameters once, even when
    shared.
    """
    check_bool("verbose", verbose)
    if custom_ops is not None and not isinstance(custom_ops, Mapping):
        raise TypeError(f"custom_ops must be a mapping {{module class: counter}}, got {type(custom_ops).__name__}")
    custom_ops = dict(custom_ops or {})
    bad_keys = [key for key in custom_ops if not (isinstance(key, type) and issubclass(key, nn.Module))]
    if bad_keys:
        raise TypeError(f"custom_ops keys must be nn.Module classes, got {bad_keys!r}")
    args = tuple(tensor) if isinstance(tensor, (tuple, list)) else (() if tensor is None else (tensor,))
    counter = TorchFLOPsByFX(model, leaf_types=tuple(custom_ops))  # custom-counted classes stay whole
    custom_macs: dict[str, int] = {}
    counters: dict[int, CustomCounter | None] = {}  # by id(module); the graph may be retraced per input

    def observe(node: fx.Node, plan: NodePlan, node_args: tuple, node_kwargs: dict, result: Any) -> None:
        if id(plan.module) not in counters:
            counters[id(plan.module)] = _custom_counter_for(plan.module, custom_ops)
        custom = counters[id(plan.module)]
        if custom is not None:
            path = plan.module_qualname or ""
            custom_macs[path] = custom_macs.get(path, 0) + _custom_macs(plan.module, custom, node_args, result)

    if custom_ops:
        counter._propagate(args, kwargs, observe)
    else:
        counter.propagate(*args, **kwargs)
    records = counter.records
    layers, total = layer_rows(counter.model, records, custom_macs)  # the model inside a DataParallel ...
    if verbose:
        _report_unsupported(layers)
    return total.macs, total.params, LayerInfo(tuple(layers), total, tuple(records))


def _report_unsupported(layers: list[LayerRecord]) -> None:
    """One line per op that no rule knows, with the layers that ran it."""
    where: dict[str, list[str]] = {}
    for layer in layers:
        for target in layer.unsupported:
            where.setdefault(target, []).append(layer.path or "(root)")
    for target, paths in where.items():
        shown = ", ".join(paths[:3]) + (f", ... ({len(paths)} layers)" if len(paths) > 3 else "")
        print(f"[torch_flops] no rule for {target}: not counted in {shown}")
