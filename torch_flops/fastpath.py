"""The FLOPs-only hot path: the graph flattened once into a list of steps that one tight loop runs.

``torch.fx.Interpreter`` pays a Python dispatch per node (``getattr`` on the op kind, ``map_arg`` over the
arguments, an environment keyed by node, a context manager) and our interpreter adds clocks, storage
and byte bookkeeping on top. A FLOPs-only run needs none of it. :class:`FastRun` resolves, once per
graph, what each node calls (the module, function or method), where each argument comes from (a slot of
a flat value list, or a constant) and which values die after it; running a node is then filling its
arguments, calling, keeping the output's shapes and pricing it with its planned rule. Nodes without a
rule run once under the aten-level counter, exactly as in the interpreter. Values are freed after their
last use (as ``garbage_collect_values`` does), so memory stays bounded.

There is no code generation, so building a :class:`FastRun` is cheap and it serves the first
``propagate(..., timing=False)`` too. Records match the interpreter's field for field, except the
analytic memory columns (``read_bytes``, ``written_bytes``, ``live_bytes``), which need the storage
bookkeeping this path leaves out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from torch_flops.interpreter import (
    NodePlan,
    _aten_costs,
    _fallback_price,
    _shapes,
    check_cost,
    fallback_scope,
    node_error,
    rule_error,
    start_fallback,
)
from torch_flops.records import ZERO_COST, Cost, NodeRecord, Status
from torch_flops.registry import CostRegistry, OpCall

_Tensor = torch.Tensor
_CALL = 0  # kinds of steps
_FALLBACK = 1
_GET_ATTR = 2


def _out_shapes(value: Any) -> tuple:
    """``_shapes`` with the common case, one tensor, first."""
    if isinstance(value, _Tensor):
        return (tuple(value.shape),)
    return _shapes(value)


def _call_method(name: str) -> Callable[..., Any]:
    def call(self_arg: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self_arg, name)(*args, **kwargs)

    return call


def _status(plan: NodePlan) -> Status:
    if plan.ignored:
        return Status.IGNORED
    if plan.rule is None or not plan.rule.known_zero:
        return Status.RULE  # (fallback nodes' statuses come from the run)
    return Status.ZERO


class _Step:
    """One op node, resolved: what to call and where its arguments come from."""

    __slots__ = ("index", "kind", "fn", "args", "arg_slots", "kwargs", "kwarg_slots", "nested", "free", "node", "plan",
                 "rule", "module")

    def __init__(self, index: int, kind: int, fn: Any, node: fx.Node, plan: NodePlan, slot: dict[fx.Node, int]) -> None:
        self.index, self.kind, self.fn, self.node, self.plan = index, kind, fn, node, plan
        priced = kind == _CALL and not plan.ignored and not plan.rule.known_zero
        self.rule = plan.rule.fn if priced else None  # None: the node's status alone gives its cost (0)
        self.module = plan.module
        self.free: tuple[int, ...] = ()
        args, kwargs = node.args, node.kwargs
        self.nested = any(isinstance(a, _CONTAINERS) for a in args) or any(isinstance(v, _CONTAINERS) for v in kwargs.values())
        self.args = tuple([None if type(a) is fx.Node else a for a in args])
        self.arg_slots = tuple([(p, slot[a]) for p, a in enumerate(args) if type(a) is fx.Node])
        self.kwargs = {k: v for k, v in kwargs.items() if type(v) is not fx.Node}
        self.kwarg_slots = tuple([(k, slot[v]) for k, v in kwargs.items() if type(v) is fx.Node])


_CONTAINERS = (tuple, list, dict, slice)  # arguments that may hold nodes


class FastRun:
    """The FLOPs-only runner of one graph (built once per graph); :meth:`run` gives output and records."""

    def __init__(self, gm: fx.GraphModule, plans: dict[fx.Node, NodePlan], registry: CostRegistry) -> None:
        self.gm = gm
        self.registry = registry
        self.nodes = list(gm.graph.nodes)
        self.plans = [plans[n] for n in self.nodes]
        self.slot = {node: i for i, node in enumerate(self.nodes)}
        self.placeholders = [node for node in self.nodes if node.op == "placeholder"]
        self.output_node = next((node for node in self.nodes if node.op == "output"), None)
        self.steps = [self._step(i, node) for i, node in enumerate(self.nodes) if node.op not in ("placeholder", "output")]
        self._attach_frees()
        self.producers = [self._producers(node) for node in self.nodes]  # input shapes = their output shapes
        self.statuses = [_status(plan) for plan in self.plans]  # of nodes not run by the fallback
        self._previous: tuple[tuple, list[NodeRecord]] | None = None  # the last run and its records

    def _step(self, i: int, node: fx.Node) -> _Step:
        plan = self.plans[i]
        if node.op == "get_attr":
            owner, _, name = node.target.rpartition(".")
            return _Step(i, _GET_ATTR, (self.gm.get_submodule(owner) if owner else self.gm, name), node, plan, self.slot)
        if node.op == "call_module":
            fn = plan.module if plan.module is not None else self.gm.get_submodule(node.target)
        elif node.op == "call_method":
            fn = _call_method(node.target)
        else:
            fn = node.target
        return _Step(i, _FALLBACK if plan.fallback else _CALL, fn, node, plan, self.slot)

    def _attach_frees(self) -> None:
        """Each step frees the values whose last user it is; a value nobody uses is freed by the step
        that made it, and the output's arguments live to the end."""
        step_at = {step.index: step for step in self.steps}
        frees: dict[int, list[int]] = {}
        for i, node in enumerate(self.nodes):
            if any(user.op == "output" for user in node.users):
                continue
            last = max((self.slot[user] for user in node.users), default=i)
            if last in step_at:
                frees.setdefault(last, []).append(i)
        for step in self.steps:
            step.free = tuple(frees.get(step.index, ()))

    def _producers(self, node: fx.Node) -> tuple[int, ...]:
        """The slots of the nodes ``node`` reads, in argument order."""
        found: list[int] = []
        fx.map_arg((node.args, node.kwargs), lambda arg: found.append(self.slot[arg]))
        return tuple(found)

    # -- a run ------------------------------------------------------------------------------------------
    def run(self, inputs: list[Any]) -> tuple[Any, list[NodeRecord]]:
        n = len(self.nodes)
        values: list[Any] = [None] * n
        shapes: list[tuple] = [()] * n
        costs: list[Cost | None] = [ZERO_COST] * n
        fallbacks: dict[int, tuple] = {}  # status, missing ops, aten costs and module costs of fallback nodes
        self._bind_inputs(self.gm.graph.process_inputs(*inputs), values, shapes)
        registry = self.registry
        with torch.no_grad():
            for step in self.steps:
                if step.nested:
                    lookup = lambda node: values[self.slot[node]]  # noqa: E731
                    args, kwargs = fx.map_arg(step.node.args, lookup), fx.map_arg(step.node.kwargs, lookup)
                else:
                    if step.arg_slots:
                        args = list(step.args)
                        for position, source in step.arg_slots:
                            args[position] = values[source]
                    else:
                        args = step.args
                    kwargs = step.kwargs
                    if step.kwarg_slots:
                        kwargs = dict(kwargs)
                        for key, source in step.kwarg_slots:
                            kwargs[key] = values[source]
                kind = step.kind
                try:
                    if kind == _CALL:
                        output = step.fn(*args, **kwargs)
                    elif kind == _GET_ATTR:
                        output = getattr(*step.fn)
                    else:
                        mode, attribution = start_fallback(step.plan, registry)
                        with fallback_scope(mode, attribution):
                            output = step.fn(*args, **kwargs)
                except Exception as error:
                    raise node_error(step.node, step.plan, args, kwargs, error) from error
                i = step.index
                values[i] = output
                shapes[i] = (tuple(output.shape),) if isinstance(output, _Tensor) else _shapes(output)
                if step.rule is not None:  # inlined price(): this is the per-node hot spot
                    try:
                        cost = step.rule(OpCall(args, kwargs, output, step.module))
                    except Exception as error:
                        raise rule_error(step.node, step.plan, args, kwargs, error) from error
                    if type(cost) is not Cost or type(cost.flops) is not int or type(cost.macs) is not int \
                            or cost.flops < 0 or cost.macs < 0:
                        check_cost(cost, step.node, step.plan)
                    costs[i] = cost
                elif kind == _FALLBACK:
                    status, costs[i], missing = _fallback_price(mode.tally)
                    modules = attribution.module_costs() if attribution is not None else ()
                    fallbacks[i] = (status, missing, _aten_costs(mode.tally), modules)
                for dead in step.free:
                    values[dead] = None
            output = None
            if self.output_node is not None:
                output = fx.map_arg(self.output_node.args[0], lambda node: values[self.slot[node]])
                output = self.gm.graph.process_outputs(output)
        return output, self._records(shapes, costs, fallbacks, output)

    def _bind_inputs(self, inputs: tuple | list, values: list[Any], shapes: list[tuple]) -> None:
        """Placeholders take the inputs in order, as ``fx.Interpreter`` does: a starred one takes the
        rest, a missing one its default."""
        remaining = list(inputs)
        for node in self.placeholders:
            i = self.slot[node]
            if node.target.startswith("*"):
                value, remaining = remaining, []
            elif remaining:
                value = remaining.pop(0)
            elif node.args:
                value = node.args[0]
            else:
                raise RuntimeError(f"expected a value for the input '{node.target}' of the graph, got {len(inputs)} inputs")
            values[i], shapes[i] = value, _out_shapes(value)

    def _records(self, shapes: list[tuple], costs: list[Cost | None], fallbacks: dict[int, tuple], output: Any) -> list[NodeRecord]:
        """One record per node. Records are immutable, so a run whose shapes and costs are those of the
        previous run returns the previous records (a repeated run builds none)."""
        out_shapes = _shapes(output)
        run = (shapes, costs, fallbacks, out_shapes)
        if self._previous is not None and self._previous[0] == run:
            return list(self._previous[1])
        records = []
        for i, node in enumerate(self.nodes):
            plan, cost = self.plans[i], costs[i]
            status, missing, aten, modules = fallbacks.get(i) or (self.statuses[i], (), (), ())
            if node.op == "output":
                inputs = outputs = out_shapes
            else:
                inputs = tuple([shape for j in self.producers[i] for shape in shapes[j]])
                outputs = shapes[i]
            records.append(
                NodeRecord(
                    name=node.name, op=node.op, target=plan.target, module_path=plan.module_path,
                    module_class=plan.module_class, status=status,
                    flops=None if cost is None else cost.flops, macs=None if cost is None else cost.macs,
                    input_shapes=inputs, output_shapes=outputs,
                    unsupported_ops=missing, aten_costs=aten, module_costs=modules,
                )
            )
        self._previous = (run, records)
        return list(records)
