"""The FLOPs-only hot path: the graph compiled to Python once, with pricing inlined.

``torch.fx.Interpreter`` pays a Python dispatch per node (fetching arguments from its environment,
``getattr`` on the op kind, our clocks and bookkeeping). A FLOPs-only run needs none of it: the graph is
copied once, a call to :meth:`FastRun._record` is inserted after every op node (it prices the node with
its planned rule and keeps the shapes), nodes without a rule are routed through the aten-level counter,
and FX generates straight-line Python for the result, which then runs at the speed of the model's own
``forward``. Values are freed as in generated code, so memory stays bounded.

Used by ``propagate(..., timing=False)``; a node that raises is re-run through the interpreter, whose
error names the node.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from torch_flops.interpreter import (
    NodePlan,
    _aten_costs,
    _fallback_price,
    _shapes,
    fallback_scope,
    price,
    start_fallback,
)
from torch_flops.records import ZERO_COST, Cost, NodeRecord, Status
from torch_flops.registry import CostRegistry


def _out_shapes(value: Any) -> tuple:
    """``_shapes`` with the common case, one tensor, first."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape),)
    return _shapes(value)


class FastRun:
    """A compiled, instrumented copy of ``gm`` (built once per graph); :meth:`run` gives the records."""

    def __init__(self, gm: fx.GraphModule, plans: dict[fx.Node, NodePlan], registry: CostRegistry) -> None:
        self.registry = registry
        self.nodes = list(gm.graph.nodes)
        self.plans = [plans[n] for n in self.nodes]
        n = len(self.nodes)
        self.costs: list[Cost | None] = [ZERO_COST] * n
        self.statuses: list[Status] = [Status.ZERO] * n
        self.in_shapes: list[tuple] = [()] * n
        self.out_shapes: list[tuple] = [()] * n
        self.aten: list[tuple] = [()] * n
        self.missing: list[tuple] = [()] * n
        self.module_costs: list[tuple] = [()] * n
        self.callables: dict[int, Callable[..., Any]] = {}  # the ops of nodes run by the fallback
        self.index = {node: i for i, node in enumerate(self.nodes)}
        self.producers = [self._producers(node) for node in self.nodes]  # input shapes = their output shapes
        self.module = self._compile(gm)

    def _compile(self, gm: fx.GraphModule) -> fx.GraphModule:
        graph = fx.Graph()
        mapping: dict[fx.Node, fx.Node] = {}
        for i, node in enumerate(self.nodes):
            plan = self.plans[i]
            if node.op == "placeholder":
                new = graph.placeholder(node.target, default_value=node.args[0] if node.args else inspect.Signature.empty)
                new.name = node.name
                mapping[node] = new
                graph.call_function(self._record_input, (i, new))
                continue
            if node.op == "output":
                graph.output(fx.map_arg(node.args[0], mapping.__getitem__))
                continue
            args = fx.map_arg(node.args, mapping.__getitem__)
            kwargs = fx.map_arg(node.kwargs, mapping.__getitem__)
            if plan.fallback:
                self.callables[i] = self._callable(gm, node)
                new = graph.call_function(self._run_fallback, (i, args, kwargs))
            else:
                new = graph.node_copy(node, mapping.__getitem__)
                graph.call_function(self._record, (i, new, args, kwargs))
            mapping[node] = new
        return fx.GraphModule(gm, graph, f"{type(gm).__name__}FLOPsOnly")

    @staticmethod
    def _callable(gm: fx.GraphModule, node: fx.Node) -> Callable[..., Any]:
        if node.op == "call_module":
            return gm.get_submodule(node.target)
        if node.op == "call_method":
            name = node.target
            return lambda self_arg, *args, **kwargs: getattr(self_arg, name)(*args, **kwargs)
        return node.target

    def _producers(self, node: fx.Node) -> tuple[int, ...]:
        """The indices of the nodes ``node`` reads, in argument order."""
        found: list[int] = []
        fx.map_arg((node.args, node.kwargs), lambda arg: found.append(self.index[arg]))
        return tuple(found)

    # -- called from the generated code ---------------------------------------------------------------
    def _record_input(self, i: int, value: Any) -> None:
        self.out_shapes[i] = _out_shapes(value)

    def _record(self, i: int, output: Any, args: tuple, kwargs: dict) -> None:
        self.out_shapes[i] = _out_shapes(output)  # input shapes are the producers' outputs, read after the run
        self.statuses[i], self.costs[i] = price(self.nodes[i], self.plans[i], args, kwargs, output)

    def _run_fallback(self, i: int, args: tuple, kwargs: dict) -> Any:
        mode, attribution = start_fallback(self.plans[i], self.registry)
        with fallback_scope(mode, attribution):
            output = self.callables[i](*args, **kwargs)
        if attribution is not None:
            self.module_costs[i] = attribution.module_costs()
        self.statuses[i], self.costs[i], self.missing[i] = _fallback_price(mode.tally)
        self.aten[i] = _aten_costs(mode.tally)
        self.out_shapes[i] = _out_shapes(output)
        return output

    # -- a run ------------------------------------------------------------------------------------------
    def run(self, inputs: list[Any]) -> tuple[Any, list[NodeRecord]]:
        with torch.no_grad():
            output = self.module(*inputs)
        records = []
        out_shapes = self.out_shapes
        for i, node in enumerate(self.nodes):
            plan, cost, status = self.plans[i], self.costs[i], self.statuses[i]
            records.append(
                NodeRecord(
                    name=node.name, op=node.op, target=plan.target, module_path=plan.module_path,
                    module_class=plan.module_class, status=status,
                    flops=None if cost is None else cost.flops, macs=None if cost is None else cost.macs,
                    input_shapes=(tuple(shape for j in self.producers[i] for shape in out_shapes[j])
                                  if node.op != "output" else _shapes(output)),
                    output_shapes=self.out_shapes[i] if node.op != "output" else _shapes(output),
                    unsupported_ops=self.missing[i], aten_costs=self.aten[i],
                    module_costs=self.module_costs[i],
                )
            )
        return output, records
