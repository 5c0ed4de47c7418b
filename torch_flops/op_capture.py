"""Op rows inside leaves: every torch-level call a leaf module makes becomes a record of its own.

A module that FX cannot trace (every Hugging Face model since transformers 5, a module whose
``forward`` writes state, a user's leaf) runs as one graph node. While it runs, :class:`OpCapture`, a
``TorchFunctionMode``, sees each call at the torch level (``F.linear``, ``torch.matmul``,
``Tensor.add``, ``F.scaled_dot_product_attention``, ``torch.ops.aten.*`` ...; a call made *inside*
another one is part of it) and prices it as a traced node would be:

- by the function rule of the function, the method rule of a ``Tensor`` method (by name) or the aten
  rule of an aten operator called directly, the same rules traced nodes use, so a call costs the same
  on every device and with every kernel (attention is priced from its call: its mask, ``is_causal``,
  ``scale`` and grouped heads, not from the kernel a backend picks);
- when no such rule exists, by the aten ops the call dispatches (:class:`~torch_flops.fallback.AtenCostMode`),
  named in the record's ``aten_costs``; an aten op without a rule makes the call unsupported.

Each record carries the innermost module running (:class:`~torch_flops.attribution.ModuleStack`), the
shapes, FLOPs, MACs, bytes read and written and, when a probe is given, the call's time and CUDA memory
readings. Attribute reads (``x.shape``, ``x.T``) and calls that return no tensor and cost nothing
(``x.size()``, grad-mode switches) make no record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
from torch._ops import OpOverload
from torch.overrides import TorchFunctionMode

from torch_flops import memory
from torch_flops.attribution import ModuleStack
from torch_flops.fallback import AtenCostMode, aten_label
from torch_flops.labels import function_label
from torch_flops.measure import Probe, describe_inputs, tensors_in
from torch_flops.records import ZERO_COST, AtenOpCost, Cost, NodeRecord, Status, frozen_from_dict, record_template
from torch_flops.registry import CostRegistry, CostRuleError, OpCall, Rule, valid_cost

_Tensor = torch.Tensor
_SKIP = None  # how a call that never makes a record is resolved
_TENSOR_CLASSES = frozenset({"Tensor", "TensorBase", "_TensorBase"})  # (torch < 2.3 names its C base _TensorBase)


class _Callee:
    """How calls of one function are recorded: node kind, label, short name and rule."""

    __slots__ = ("op", "target", "short", "rule", "ignored")

    def __init__(self, op: str, target: str, short: str, rule: Rule | None, ignored: bool) -> None:
        self.op, self.target, self.short, self.rule, self.ignored = op, target, short, rule, ignored


def _method_name(func: Any) -> str | None:
    """The name of a ``Tensor`` method (``TensorBase.add`` -> ``'add'``), else ``None``."""
    owner = getattr(func, "__qualname__", "").partition(".")[0]
    return func.__name__ if owner in _TENSOR_CLASSES else None


def resolve(func: Any, registry: CostRegistry, ignore: Collection[Any]) -> _Callee | None:
    """How calls of ``func`` are recorded; ``None`` for attribute reads (``Tensor.shape.__get__``)."""
    if getattr(func, "__name__", None) == "__get__":
        return _SKIP
    if isinstance(func, OpOverload):
        label = aten_label(func)
        return _Callee("call_function", label, func.overloadpacket.__name__, registry.aten_rule(func), False)
    name = _method_name(func)
    if name is not None:
        return _Callee("call_method", name, name.strip("_"), registry.method_rule(name), name in ignore)
    label = function_label(func)
    ignored = any(spec is func for spec in ignore)
    return _Callee("call_function", label, label.rpartition(".")[2].strip("_"), registry.function_rule(func), ignored)


class OpCapture(TorchFunctionMode):
    """Records the torch-level calls made while it is active (see the module docstring).

    ``leaf``/``leaf_path``: the module running as one node and its qualified name; ``node_name``: that
    node's name, which prefixes the records' names (``root_module.linear_3``). With ``probe`` each
    call is timed (a CUDA event pair, or ``perf_counter``) and CUDA memory is read around it; the
    records are made by :meth:`records`, after the probe's device work has finished."""

    def __init__(
        self, registry: CostRegistry, leaf: torch.nn.Module, leaf_path: str, node_name: str,
        probe: Probe | None = None, ignore: Collection[Any] = (), measure_bytes: bool = False,
        claim: Callable[[str, Any], None] | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.modules = ModuleStack(leaf, leaf_path)
        self.node_name = node_name
        self.probe = probe
        self.ignore = ignore
        self.measure_bytes = measure_bytes
        self.claim = claim  # told each record's name and the call's output (backward attribution)
        self._callees: dict[Any, _Callee | None] = {}
        self._names: Counter[str] = Counter()
        self._pending: list[dict[str, Any]] = []
        self._spans: list[Any] = []  # each call's span (see Probe.begin), None when untimed
        self.cost: Cost | None = ZERO_COST  # the sum over the calls; None once one is unsupported
        self.unsupported: dict[str, None] = {}  # aten ops without a rule, in order

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if kwargs is None:
            kwargs = {}
        try:
            callee = self._callees[func]
        except KeyError:
            callee = self._callees[func] = resolve(func, self.registry, self.ignore)
        except TypeError:  # an unhashable callable
            callee = resolve(func, self.registry, self.ignore)
        if callee is _SKIP:
            return func(*args, **kwargs)
        rule = callee.rule
        probe = self.probe
        memory_span = probe.memory_begin() if probe is not None else None
        start = probe.begin() if probe is not None else None
        aten = None
        if callee.ignored or rule is not None:
            output = func(*args, **kwargs)
        else:
            aten = AtenCostMode(self.registry)
            with aten:
                output = func(*args, **kwargs)
        span = probe.end(start) if probe is not None else None
        measured = probe.memory_end(memory_span) if probe is not None else None
        out_tensors = [output] if type(output) is _Tensor else tensors_in(output)
        aten_costs: tuple[AtenOpCost, ...] = ()
        unsupported: tuple[str, ...] = ()
        if callee.ignored:
            status, cost = Status.IGNORED, ZERO_COST
        elif aten is not None:
            tally = aten.tally
            if not out_tensors and not tally.unsupported and not tally.cost.flops:
                return output  # bookkeeping: no tensor made, nothing computed (x.size(), bool(x))
            aten_costs = tally.op_costs()
            unsupported = tuple(tally.unsupported)
            status, cost = (Status.UNSUPPORTED, None) if unsupported else (Status.FALLBACK, tally.cost)
        elif rule.known_zero:
            if not out_tensors:
                return output
            status, cost = Status.ZERO, ZERO_COST
        else:
            cost = self._price(callee, args, kwargs, output)
            if not out_tensors and not cost.flops:
                return output
            status = Status.RULE
        in_tensors = tensors_in((args, kwargs))
        name = self._add(callee, status, cost, in_tensors, out_tensors, unsupported, aten_costs, measured)
        self._spans.append(span)
        if self.claim is not None:
            self.claim(name, output)
        return output

    def _price(self, callee: _Callee, args: tuple, kwargs: dict, output: Any) -> Cost:
        path = self.modules.top[0]
        where = f" in module '{path}'" if path else ""
        try:
            cost = callee.rule.fn(OpCall(args, kwargs, output))
        except Exception as error:
            raise CostRuleError(
                f"cost rule {callee.rule.name} failed on {callee.target}{where} (inside node '{self.node_name}') "
                f"with input shapes [{describe_inputs(args, kwargs)}]: {type(error).__name__}: {error}"
            ) from error
        if not valid_cost(cost):
            raise CostRuleError(
                f"cost rule {callee.rule.name} returned {cost!r} for {callee.target}{where}; expected a Cost of two non-negative ints"
            )
        return cost

    def _add(
        self, callee: _Callee, status: Status, cost: Cost | None, in_tensors: list[_Tensor], out_tensors: list[_Tensor],
        unsupported: tuple[str, ...], aten_costs: tuple[AtenOpCost, ...], measured: Mapping[str, int | None] | None,
    ) -> str:
        """Keep the fields of one call's record; return its name."""
        count = self._names[callee.short]
        self._names[callee.short] = count + 1
        path, cls = self.modules.top
        name = f"{self.node_name}.{callee.short}" + (f"_{count}" if count else "")
        fields = {
            "name": name,
            "op": callee.op, "target": callee.target, "module_path": path, "module_class": cls, "status": status,
            "flops": None if cost is None else cost.flops, "macs": None if cost is None else cost.macs,
            "input_shapes": tuple([tuple(t.shape) for t in in_tensors]),
            "output_shapes": tuple([tuple(t.shape) for t in out_tensors]),
            "unsupported_ops": unsupported, "aten_costs": aten_costs, "leaf_node": self.node_name,
        }
        if measured is not None:
            fields.update(measured)
        if self.measure_bytes:
            fields["read_bytes"], fields["written_bytes"] = memory.bytes_of(in_tensors), memory.bytes_of(out_tensors)
        self._pending.append(fields)
        if cost is None or self.cost is None:
            self.cost = None
            self.unsupported.update(dict.fromkeys(unsupported))
        else:
            self.cost = self.cost + cost
        return name

    def records(self) -> tuple[NodeRecord, ...]:
        """One record per call, in call order (read after the probe's device work has finished)."""
        records = []
        for fields, span in zip(self._pending, self._spans):
            state = record_template(fields)
            if span is not None:
                state |= self.probe.span_fields(span)
            records.append(frozen_from_dict(NodeRecord, state))
        return tuple(records)
