"""Runs a traced graph on real (or meta) tensors, node by node, and emits one :class:`NodeRecord` each.

The graph is flattened once (per graph) into a list of steps: what each node calls (its module,
function or method, resolved when the step is built), where each argument comes from (a slot of a flat
value list, or a constant) and which values die after it. A run is one loop over the steps, so a node
costs a few attribute reads on top of its own work, not ``torch.fx.Interpreter``'s per-node dispatch
(environment lookups, ``map_arg``, ``getattr`` on the op kind, a context manager). Values are freed
after their last use, as ``Interpreter``'s ``garbage_collect_values`` does, so memory stays bounded.

Each node is priced with the rule planned for it (:func:`torch_flops.planning.plan_graph`); a node
without a rule runs once, never twice, under the aten-level counter (:mod:`torch_flops.fallback`), so
in-place ops stay correct. A node made inside an autocast region of ``forward`` calls its op inside
``torch.autocast`` again (:mod:`torch_flops.autocast`; the step's function is wrapped once, when the
step is built). Outputs are returned untouched: the model's output is exactly what
``model(*inputs)`` returns.

Two loops share the steps:

- :meth:`GraphRunner.run_flops` counts FLOPs only (``propagate(..., timing=False)``): no clocks, no
  memory bookkeeping; a repeated run with the same shapes and costs returns the previous (immutable)
  records.
- :meth:`GraphRunner.run` also times each node (when asked; on CUDA with a pair of events per node and
  one synchronisation per run, see :mod:`torch_flops.measure`), reads CUDA memory around it, counts the
  bytes it reads and writes, follows the storages its values hold for the liveness pass
  (:mod:`torch_flops.memory`), and calls an observer after each node.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from torch_flops import memory
from torch_flops.autocast import AUTOCAST_META, under_autocast
from torch_flops.planning import (
    NodeObserver,
    NodePlan,
    _shapes,
    IgnoreSpec,
    check_cost,
    node_error,
    observer_error,
    rule_error,
    start_fallback,
    submodule,
)
from torch_flops.measure import Probe, tensors_in
from torch_flops.records import ZERO_COST, Cost, NodeRecord, Status, check_record_fields, frozen_from_dict, record_template
from torch_flops.tracer import OUTPUT_CLASS_META
from torch_flops.tracing import modules_of, state_tensors
from torch_flops.registry import CostRegistry, OpCall

_Tensor = torch.Tensor
_CALL = 0  # kinds of steps
_FALLBACK = 1
_GET_ATTR = 2
_CONTAINERS = (tuple, list, dict, slice)  # arguments that may hold nodes
_Node = fx.Node


def _call_method(name: str) -> Callable[..., Any]:
    def call(self_arg: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self_arg, name)(*args, **kwargs)

    return call


_IGNORED, _RULE, _ZERO = Status.IGNORED, Status.RULE, Status.ZERO  # read once: an Enum member lookup is slow


def _status(plan: NodePlan) -> Status:
    """The status of a node not run by the fallback (a fallback node's comes from its run)."""
    if plan.ignored:
        return _IGNORED
    if plan.rule is None or not plan.rule.known_zero:
        return _RULE
    return _ZERO


_PLANNED_DETAILS = {status: (status, (), (), ()) for status in Status}  # (status, unsupported ops, aten costs, op records)


class _Step:
    """One op node, resolved: what to call, where its arguments come from, which values die after it."""

    __slots__ = ("index", "kind", "fn", "args", "arg_slots", "kwargs", "kwarg_slots", "nested", "free", "node", "plan",
                 "rule", "module", "reads")

    def __init__(self, index: int, kind: int, fn: Any, node: fx.Node, plan: NodePlan, slot: dict[fx.Node, int]) -> None:
        self.index, self.kind, self.fn, self.node, self.plan = index, kind, fn, node, plan
        rule = plan.rule
        priced = kind == _CALL and not plan.ignored and not rule.known_zero
        self.rule = rule.fn if priced else None  # None: the node's status alone gives its cost (0)
        self.module = plan.module
        self.free: tuple[int, ...] = ()
        nested = False
        args = list(node.args)
        arg_slots: list[tuple[int, int]] = []
        reads: list[int] = []  # the slots of the nodes read, in argument order
        for position, arg in enumerate(args):
            if type(arg) is _Node:
                source = slot[arg]
                arg_slots.append((position, source))
                reads.append(source)
                args[position] = None
            elif isinstance(arg, _CONTAINERS):
                nested = True
        self.args, self.arg_slots = tuple(args), tuple(arg_slots)
        kwargs = node.kwargs
        kwarg_slots: list[tuple[str, int]] = []
        if kwargs:
            kwargs = dict(kwargs)
            for key, value in node.kwargs.items():
                if type(value) is _Node:
                    source = slot[value]
                    kwarg_slots.append((key, source))
                    reads.append(source)
                    del kwargs[key]
                elif isinstance(value, _CONTAINERS):
                    nested = True
        else:
            kwargs = {}
        self.kwargs, self.kwarg_slots, self.nested = kwargs, tuple(kwarg_slots), nested
        self.reads = tuple(reads) if not nested else _reads(node, slot)

    def arguments(self, values: list[Any], slot: dict[fx.Node, int]) -> tuple[Any, dict[str, Any]]:
        """The step's arguments, from the values computed so far."""
        if self.nested:  # fresh plain lists and dicts, as the generated code's literals are: a callee may mutate them
            lookup = lambda node: values[slot[node]]  # noqa: E731
            return _mutable(fx.map_arg(self.node.args, lookup)), _mutable(fx.map_arg(self.node.kwargs, lookup))
        args = self.args
        if self.arg_slots:
            args = list(args)
            for position, source in self.arg_slots:
                args[position] = values[source]
        kwargs = self.kwargs
        if self.kwarg_slots:
            kwargs = dict(kwargs)
            for key, source in self.kwarg_slots:
                kwargs[key] = values[source]
        return args, kwargs

    def call(self, args: Any, kwargs: dict[str, Any], counting: Any = None) -> Any:
        """Run the node (a fallback node under its ``counting``, from ``start_fallback``); an error
        names the node."""
        try:
            if self.kind == _CALL:
                return self.fn(*args, **kwargs)
            if self.kind == _GET_ATTR:
                return getattr(*self.fn)
            with counting.scope():
                return self.fn(*args, **kwargs)
        except Exception as error:
            raise node_error(self.node, self.plan, args, kwargs, error) from error

    def price(self, args: Any, kwargs: dict[str, Any], output: Any) -> Cost:
        """The node's cost by its rule (a step with ``rule`` set), checked; an error names rule and node."""
        try:
            cost = self.rule(OpCall(args, kwargs, output, self.module))
        except Exception as error:
            raise rule_error(self.node, self.plan, args, kwargs, error) from error
        check_cost(cost, self.node, self.plan)
        return cost


_IMMUTABLE = (fx.immutable_collections.immutable_list, fx.immutable_collections.immutable_dict)


def _mutable(value: Any) -> Any:
    """``value`` with FX's immutable lists and dicts (what ``map_arg`` builds) made plain lists and
    dicts again, at any depth, as the model returns them; other values are returned as they are."""
    kind = type(value)
    if kind is _Tensor or not isinstance(value, (tuple, list, dict)):
        return value
    if isinstance(value, dict):
        items = {key: _mutable(item) for key, item in value.items()}
        return dict(items) if isinstance(value, _IMMUTABLE) else _same_or(value, items.values(), lambda: kind(items))
    items = [_mutable(item) for item in value]
    if isinstance(value, _IMMUTABLE):
        return items
    if kind is tuple or kind is list:
        return _same_or(value, items, lambda: kind(items))
    return _same_or(value, items, lambda: kind(*items) if hasattr(value, "_fields") else kind(items))


def _same_or(value: Any, items: Any, rebuild: Callable[[], Any]) -> Any:
    """``value`` itself when none of its items changed, else ``rebuild()``."""
    old = value.values() if isinstance(value, dict) else value
    return value if all(a is b for a, b in zip(old, items)) else rebuild()


def _reads(node: fx.Node, slot: dict[fx.Node, int]) -> tuple[int, ...]:
    """The slots of the nodes ``node`` reads, in argument order, containers searched."""
    found: list[int] = []
    fx.map_arg((node.args, node.kwargs), lambda arg: found.append(slot[arg]))
    return tuple(found)


class GraphRunner:
    """Runs one graph (built once per graph, reused by every run of it)."""

    def __init__(
        self, gm: fx.GraphModule, plans: dict[fx.Node, NodePlan], registry: CostRegistry,
        modules_by_path: Mapping[str, nn.Module] | None = None, ignore: Collection[IgnoreSpec] = (),
    ) -> None:
        self.gm = gm
        self.ignore = ignore  # what calls inside leaves to mark ignored
        self._modules_by_path = modules_by_path  # the modules gm holds at these paths, when known
        self.registry = registry
        self.nodes = list(gm.graph.nodes)
        self.plans = [plans[n] for n in self.nodes]
        self.planned_details = [_PLANNED_DETAILS[_status(plan)] for plan in self.plans]
        self.slot = {node: i for i, node in enumerate(self.nodes)}
        self.placeholders = [node for node in self.nodes if node.op == "placeholder"]
        self.output_node = next((node for node in self.nodes if node.op == "output"), None)
        self._output_index = self.slot[self.output_node] if self.output_node is not None else -1
        # the dict subclass forward returned, which FX lowered to a dict (see tracer.OUTPUT_CLASS_META)
        self._output_class = self.output_node.meta.get(OUTPUT_CLASS_META) if self.output_node is not None else None
        self.steps = [self._step(i, node) for i, node in enumerate(self.nodes) if node.op not in ("placeholder", "output")]
        # the op nodes that run inside an autocast region of forward
        self.autocast_nodes = tuple(step.node.name for step in self.steps if step.kind != _GET_ATTR and step.node.meta.get(AUTOCAST_META))
        # the slots each node reads, in argument order (its input shapes are their output shapes)
        self.producers: list[tuple[int, ...]] = [()] * len(self.nodes)
        for step in self.steps:
            self.producers[step.index] = step.reads
        if self.output_node is not None:
            self.producers[self._output_index] = _reads(self.output_node, self.slot)
        self.last_use = self._last_uses()
        # the memory a value holds lives until its last use, except the inputs: the caller holds them
        self.live_until = [len(self.nodes) if node.op == "placeholder" else last for node, last in zip(self.nodes, self.last_use)]
        step_at = {step.index: step for step in self.steps}
        frees: dict[int, list[int]] = {}
        for i, last in enumerate(self.last_use):
            if last in step_at:
                frees.setdefault(last, []).append(i)
        for step in self.steps:
            step.free = tuple(frees.get(step.index, ()))
        self._previous: tuple[tuple, list[NodeRecord]] | None = None  # the last FLOPs-only run and its records
        self._templates: list[dict[str, Any]] | None = None  # each node's record fields that no run changes
        self._modules: list[nn.Module] | None = None  # the graph module's modules, for the model state
        self._state_bytes: dict[int, int] = {}

    def _step(self, i: int, node: fx.Node) -> _Step:
        plan = self.plans[i]
        if node.op == "get_attr":
            owner, _, name = node.target.rpartition(".")
            return _Step(i, _GET_ATTR, (submodule(self.gm, owner, self._modules_by_path) if owner else self.gm, name), node, plan, self.slot)
        if node.op == "call_module":
            fn = plan.module if plan.module is not None else submodule(self.gm, node.target, self._modules_by_path)
        elif node.op == "call_method":
            fn = _call_method(node.target)
        else:
            fn = node.target
        autocast = node.meta.get(AUTOCAST_META)
        if autocast:  # made inside an autocast region of forward: run inside it again
            fn = under_autocast(fn, autocast)
        return _Step(i, _FALLBACK if plan.fallback else _CALL, fn, node, plan, self.slot)

    def _last_uses(self) -> list[int]:
        """For each node, the index of its last user (the reader in :attr:`producers` that comes last); a
        value nobody uses dies where it is made, and the output and its arguments live to the end (index
        ``len(nodes)``)."""
        end = len(self.nodes)
        last = list(range(end))
        for i, reads in enumerate(self.producers):
            reader = end if i == self._output_index else i
            for j in reads:
                if last[j] < reader:
                    last[j] = reader
        if self._output_index >= 0:
            last[self._output_index] = end
        return last

    def _bind_inputs(self, inputs: tuple | list, values: list[Any]) -> None:
        """Placeholders take the inputs in order, one each, as ``fx.Interpreter`` does, but a ``*args``
        placeholder takes all but one for each placeholder after it (keyword-only parameters, the dict of
        ``**kwargs``); a missing input is the placeholder's default (``{}`` for ``**kwargs``)."""
        remaining = list(inputs)
        count = len(self.placeholders)
        for position, node in enumerate(self.placeholders):
            starred = node.target.startswith("*") and not node.target.startswith("**")
            if starred:
                split = max(len(remaining) - (count - position - 1), 0)
                value, remaining = remaining[:split], remaining[split:]
            elif remaining:
                value = remaining.pop(0)
            elif node.args:
                value = node.args[0]
            elif node.target.startswith("**"):
                value = {}
            else:
                raise RuntimeError(f"expected a value for the input '{node.target}' of the graph, got {len(inputs)} inputs")
            values[self.slot[node]] = value

    def _output(self, values: list[Any]) -> Any:
        """What ``forward`` returned: the output node's value, of the dict subclass it was when traced."""
        if self.output_node is None:
            return None
        output = fx.map_arg(self.output_node.args[0], lambda node: values[self.slot[node]])
        output = self.gm.graph.process_outputs(_mutable(output))
        cls = self._output_class
        if cls is not None and type(output) is dict:
            return cls(**output) if all(type(key) is str for key in output) else cls(output)
        return output

    # -- FLOPs only ---------------------------------------------------------------------------------------
    def run_flops(self, inputs: list[Any]) -> tuple[Any, list[NodeRecord]]:
        """Run under ``torch.no_grad``; return the output and the records (no time or memory columns)."""
        n = len(self.nodes)
        values: list[Any] = [None] * n
        shapes: list[tuple] = [()] * n
        costs: list[Cost | None] = [ZERO_COST] * n
        fallbacks: dict[int, tuple] = {}  # status, missing ops, aten costs and op records of fallback nodes
        self._bind_inputs(self.gm.graph.process_inputs(*inputs), values)
        for node in self.placeholders:
            shapes[self.slot[node]] = _shapes(values[self.slot[node]])
        hidden = self._hidden_inputs(values)
        registry, slot, ignore = self.registry, self.slot, self.ignore
        with torch.no_grad():
            for step in self.steps:
                args, kwargs = step.arguments(values, slot)
                kind = step.kind
                if kind == _FALLBACK:
                    counting = start_fallback(step.plan, registry, step.node.name, ignore)
                    output = step.call(args, kwargs, counting)
                else:
                    output = step.call(args, kwargs)
                i = step.index
                values[i] = output
                shapes[i] = (tuple(output.shape),) if isinstance(output, _Tensor) else _shapes(output)
                if step.rule is not None:
                    costs[i] = step.price(args, kwargs, output)
                elif kind == _FALLBACK:
                    costs[i], fallbacks[i] = counting.result()
                for dead in step.free:
                    values[dead] = None
                # the dead values are freed now, as in eager, not when the next node's run rebinds these names
                args = kwargs = output = None
            output = self._output(values)
        run = (shapes, costs, fallbacks, _shapes(output), hidden)
        if self._previous is not None and self._previous[0] == run:
            return output, list(self._previous[1])
        details = list(self.planned_details)  # a fallback node's: what its run found
        for i, found in fallbacks.items():
            details[i] = found
        records = self._records(shapes, costs, details, run[3], hidden)
        self._previous = (run, records)
        return output, list(records)

    def _hidden_inputs(self, values: list[Any]) -> frozenset[int]:
        """The placeholders that got no value worth showing: ``None``, or an empty ``*args`` /
        ``**kwargs``."""
        return frozenset(
            i for i in (self.slot[node] for node in self.placeholders)
            if values[i] is None or (isinstance(values[i], (tuple, list, dict)) and not values[i])
        )

    def _records(
        self, shapes: list[tuple], costs: list[Cost | None], details: list[tuple], output_shapes: tuple,
        hidden: frozenset[int] = frozenset(), measured: list[dict[str, Any]] | None = None,
        live: memory.Liveness | None = None,
    ) -> list[NodeRecord]:
        """One record per node: its shapes (a node's input shapes are its producers' output shapes),
        cost and details, and the ``measured`` columns and ``live`` bytes of a full run. A leaf
        node's records are those of the calls it made (the fourth item of its details), a ``hidden``
        input has none.

        Each record's fields start as a copy of the node's template (the fields no run changes, and the
        defaults), filled in here; the first record of a run is checked for every field."""
        if self._templates is None:
            defaults = record_template({})
            self._templates = templates = []
            for node, plan in zip(self.nodes, self.plans):
                template = defaults.copy()
                template["name"], template["op"], template["target"] = node.name, node.op, plan.target
                template["module_path"], template["module_class"] = plan.module_path, plan.module_class
                templates.append(template)
        records: list[NodeRecord] = []
        checked = False
        producers, output_index = self.producers, self._output_index
        for i, template in enumerate(self._templates):
            if i in hidden:
                continue
            ops = details[i][3]
            if ops:
                records += ops
                continue
            state = template.copy()
            cost = costs[i]
            if cost is None:
                state["flops"] = state["macs"] = None
            else:
                state["flops"], state["macs"] = cost.flops, cost.macs
            state["status"], state["unsupported_ops"], state["aten_costs"], _ = details[i]
            if i == output_index:
                state["input_shapes"] = state["output_shapes"] = output_shapes
            else:
                state["input_shapes"] = tuple([shape for j in producers[i] for shape in shapes[j]])
                state["output_shapes"] = shapes[i]
            if measured is not None and live is not None:
                state.update(measured[i])
                state["live_bytes"], state["live_peak_bytes"] = live.live_after[i], live.during[i]
            if not checked:
                check_record_fields(state)
                checked = True
            records.append(frozen_from_dict(NodeRecord, state))
        return records

    # -- everything ---------------------------------------------------------------------------------------
    def run(
        self, inputs: list[Any], probe: Probe, timing: bool = True, observer: NodeObserver | None = None,
        claim: Callable[[str, Any], None] | None = None,
    ) -> tuple[Any, list[NodeRecord], memory.Liveness]:
        """Run under ``torch.no_grad`` and ``probe``; return the output, the records (time when
        ``timing``, CUDA memory, bytes read and written, live bytes) and the liveness pass. With
        ``claim``, the run records autograd (for a backward pass) and ``claim`` is told each record's
        name and its op's output."""
        n = len(self.nodes)
        values: list[Any] = [None] * n
        shapes: list[tuple] = [()] * n
        costs: list[Cost | None] = [ZERO_COST] * n
        details = list(self.planned_details)  # a fallback node's are replaced by what its run finds
        measured: list[dict[str, Any]] = [{} for _ in range(n)]
        produced: list[dict[int, int]] = [{}] * n  # storages held by each node's value
        inner_peaks = [0] * n  # peak allocations inside nodes run by the fallback
        spans: list[Any] = [None] * n  # each timed node's span (see Probe.begin)
        model_state = memory.storage_ids(self._state_tensors())
        registry, slot, ignore = self.registry, self.slot, self.ignore
        countings: dict[int, Any] = {}  # the fallback nodes' counting, read once the device is done
        probe.start()
        with torch.no_grad() if claim is None else torch.enable_grad():
            self._bind_inputs(self.gm.graph.process_inputs(*inputs), values)
            hidden = self._hidden_inputs(values)
            for node in self.placeholders:
                i = slot[node]
                held = tensors_in(values[i])
                shapes[i], produced[i] = tuple(tuple(t.shape) for t in held), memory.storages(held)
                reading = probe.memory()
                measured[i] = {"mem_before_bytes": reading, "mem_after_bytes": reading}
                self._observe(observer, node, values[i], (), {})
            if probe.on_cuda:
                probe.count_from(self._inputs_bytes(values, model_state))
            for step in self.steps:
                i, kind, plan = step.index, step.kind, step.plan
                args, kwargs = step.arguments(values, slot)
                memory_span = probe.memory_begin()
                if step.nested:
                    in_tensors = tensors_in((args, kwargs))
                else:  # flat arguments: the tensors among them, in order
                    in_tensors = [a for a in args if isinstance(a, _Tensor)]
                    if kwargs:
                        in_tensors += [v for v in kwargs.values() if isinstance(v, _Tensor)]
                counting = None
                if kind == _FALLBACK:
                    state = (*plan.module.parameters(), *plan.module.buffers()) if plan.module is not None else ()
                    counting = countings[i] = start_fallback(
                        plan, registry, step.node.name, ignore, probe if timing else None, existing=(*in_tensors, *state),
                        claim=claim,
                    )
                start = probe.begin() if timing else None
                output = step.call(args, kwargs, counting)
                spans[i] = probe.end(start) if timing else None
                mem = probe.memory_end(memory_span)
                values[i] = output
                if claim is not None and (plan.module is None or kind != _FALLBACK):  # a leaf's calls claim their own
                    claim(step.node.name, output)
                if step.rule is not None:
                    costs[i] = step.price(args, kwargs, output)
                elif counting is not None:
                    inner_peaks[i] = counting.peak_bytes
                if observer is not None:
                    self._observe(observer, step.node, output, args, kwargs)
                out_tensors = [output] if isinstance(output, _Tensor) else tensors_in(output)
                shapes[i] = tuple([tuple(t.shape) for t in out_tensors])
                produced[i] = held = memory.storages(out_tensors)
                if kind == _GET_ATTR:
                    model_state |= held.keys()
                    read = written = 0
                else:
                    read = memory.bytes_of(in_tensors) + self._module_bytes(plan.module)
                    written = memory.bytes_of(out_tensors)
                measured[i] = {**mem, "read_bytes": read, "written_bytes": written}
                for dead in step.free:
                    values[dead] = None
                # the dead values are freed now, as in eager, not when the next node's run rebinds these names
                args = kwargs = in_tensors = output = out_tensors = None
            output = self._output(values)
            if self.output_node is not None:
                i = slot[self.output_node]
                held = tensors_in(output)
                produced[i] = memory.storages(held)
                reading = probe.memory()
                measured[i] = {"mem_before_bytes": reading, "mem_after_bytes": reading}
                self._observe(observer, self.output_node, output, (output,), {})
        if timing:
            probe.finish()
            for i, span in enumerate(spans):
                measured[i] |= probe.span_fields(span) if span is not None else {"time_ms": 0.0}
        for i, counting in countings.items():
            costs[i], details[i] = counting.result()
        live = memory.liveness(produced, self.live_until, model_state, inner_peaks)
        return output, self._records(shapes, costs, details, _shapes(output), hidden, measured, live), live

    def _state_tensors(self) -> list[torch.Tensor]:
        """The parameters and buffers of the graph module's modules (``gm.parameters()`` and
        ``gm.buffers()``, duplicates included, without their generator per module level)."""
        if self._modules is None:  # the graph module's tree is fixed once traced, as the steps are
            self._modules = modules_of(self.gm)
        return state_tensors(self._modules)

    def _observe(self, observer: NodeObserver | None, node: fx.Node, result: Any, args: tuple, kwargs: dict) -> None:
        if observer is None:
            return
        plan = self.plans[self.slot[node]]
        try:
            observer(node, plan, args, kwargs, result)
        except Exception as error:
            raise observer_error(node, plan, args, kwargs, error) from error

    def _inputs_bytes(self, values: list[Any], model_state: set[int]) -> int:
        """The CUDA allocator's bytes of the storages the graph's inputs hold (not the model's own)."""
        held = [t for node in self.placeholders for t in tensors_in(values[self.slot[node]]) if t.is_cuda]
        return sum(memory.allocator_bytes(n) for raw, n in memory.storages(held).items() if raw not in model_state)

    def _module_bytes(self, module: nn.Module | None) -> int:
        """Bytes of a module node's parameters and buffers, which it reads (after it ran: lazy modules
        have their parameters by then)."""
        if module is None:
            return 0
        key = id(module)
        if key not in self._state_bytes:
            self._state_bytes[key] = sum(memory.tensor_bytes(t) for t in (*module.parameters(), *module.buffers()))
        return self._state_bytes[key]
