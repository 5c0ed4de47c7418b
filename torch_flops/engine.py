"""``TorchFLOPsByFX``: the façade. It traces, runs, keeps the records, and its ``print_*`` / ``save_*``
methods only call :mod:`torch_flops.aggregate` and :mod:`torch_flops.render`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch.fx as fx
from torch import nn

from torch_flops import aggregate, render
from torch_flops import inputs as model_inputs
from torch_flops.interpreter import IgnoreSpec, NodeObserver, NodePlan, plan_graph, run
from torch_flops.measure import Probe, check_memory_function, run_device, tensors_in
from torch_flops.records import NodeRecord
from torch_flops.registry import DEFAULT_REGISTRY, CostRegistry, Rule, RuleFn
from torch_flops.tracing import TraceResult, eval_mode, trace


class TorchFLOPsByFX:
    """Count the FLOPs of every node of ``model``'s FX graph, with per-node time and CUDA memory.

    >>> counter = TorchFLOPsByFX(model)      # symbolic_trace -> counter.graph_model
    >>> counter.propagate(x)                 # runs real tensors node by node, returns model(x)
    >>> counter.print_total_flops()          # prints and returns the int total

    Args:
        model: the module to inspect. It is never left changed: training flags, parameters, buffers
            and ``requires_grad`` are as they were after every call.
        mem_func_name: ``"max_memory_allocated"`` or ``"memory_allocated"``, the CUDA reading taken
            before and after each node (memory columns are ``None`` on CPU).
        ignore_ops: module classes, functions and ``Tensor`` method names whose nodes are marked
            ignored (0 FLOPs).
        registry: the cost rules to use; the built-in rules by default.
        leaf_types: module classes to keep as single ``call_module`` nodes instead of tracing into
            them (``torch.nn`` layers always are). A leaf without a rule is counted by the aten-level
            fallback.
        extra_rules: rules for this counter only, beating the built-in ones and the fallback:
            ``{MyModule: rule, my_function: rule, "method_name": rule, torch.ops.aten.foo: rule}`` with
            ``rule(call: OpCall) -> Cost`` (or a :class:`Rule`). The registry itself is not changed.
        leaf_modules: qualified names of submodules to keep whole ('' for the whole model).
        concrete_args: values to specialise the graph on, as ``symbolic_trace``'s ``concrete_args``.
            Non-tensor inputs given to :meth:`propagate` (``None``, ints, bools, ...) are specialised on
            automatically, and containers of tensors become one graph input per tensor.
        auto_leaf: when FX cannot trace a module's ``forward``, keep that module whole (counted by the
            aten-level fallback, its submodules still reported under their own names) instead of
            raising :class:`TraceError`. :attr:`leaf_modules` says which modules became leaves and why.
    """

    def __init__(
        self,
        model: nn.Module,
        mem_func_name: str = "max_memory_allocated",
        ignore_ops: Iterable[IgnoreSpec] | IgnoreSpec = (),
        registry: CostRegistry | None = None,
        leaf_types: tuple[type, ...] = (),
        extra_rules: Mapping[Any, Rule | RuleFn] | None = None,
        leaf_modules: Iterable[str] = (),
        concrete_args: Mapping[str, Any] | None = None,
        auto_leaf: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"torch_flops expects an nn.Module, got {type(model).__name__}")
        check_memory_function(mem_func_name)
        if isinstance(ignore_ops, (str, type)) or callable(ignore_ops):
            ignore_ops = [ignore_ops]
        self.model = model
        self.mem_func_name = mem_func_name
        self.ignore_ops: tuple[IgnoreSpec, ...] = tuple(ignore_ops)
        self.registry = (registry or DEFAULT_REGISTRY).overlay(extra_rules or {})
        self.leaf_types = tuple(leaf_types)
        self.leaf_paths = (leaf_modules,) if isinstance(leaf_modules, str) else tuple(leaf_modules)
        self.concrete_args = dict(concrete_args or {})
        self.auto_leaf = auto_leaf
        self._graphs: dict[Any, tuple[TraceResult, dict[fx.Node, NodePlan], dict[str, Any]]] = {}
        self._current = self._graph_for(model_inputs.default_bound(model))
        self.records: list[NodeRecord] = []

    def _graph_for(self, bound: model_inputs.BoundInputs) -> tuple[TraceResult, dict[fx.Node, NodePlan], dict[str, Any]]:
        """The traced graph, its plans and concrete arguments for inputs like ``bound`` (cached)."""
        key = (model_inputs.input_spec(bound), tuple(sorted(self.concrete_args.items(), key=lambda kv: kv[0])))
        try:
            return self._graphs[key]
        except (KeyError, TypeError):
            pass
        concrete = model_inputs.concrete_args(bound) | self.concrete_args
        result = trace(self.model, self.leaf_types, self.leaf_paths, concrete, self.auto_leaf)
        entry = (result, plan_graph(result.graph_module, self.registry, self.ignore_ops), concrete)
        try:
            self._graphs[key] = entry
        except TypeError:  # an unhashable concrete value: do not cache
            pass
        return entry

    @property
    def graph_model(self) -> fx.GraphModule:
        """The graph of the last :meth:`propagate` (or, before it, of tensor inputs and default arguments)."""
        return self._current[0].graph_module

    @property
    def leaf_modules(self) -> dict[str, str]:
        """Modules kept whole in the current graph, by qualified name ('' for the whole model), with why:
        the first line of the trace error that made them leaves, or ``"named by the user"``."""
        return dict(self._current[0].leaf_modules)

    @property
    def _plans(self) -> dict[fx.Node, NodePlan]:
        return self._current[1]

    # -- running ------------------------------------------------------------------------------------
    def propagate(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model on real inputs in eval mode under ``torch.no_grad()`` and record every node.

        Returns the model's output. Afterwards the model's and every submodule's training flag is
        restored.
        """
        return self._propagate(args, kwargs)

    def _propagate(self, args: tuple[Any, ...], kwargs: dict[str, Any], observer: NodeObserver | None = None) -> Any:
        bound = model_inputs.bind(self.model, args, kwargs)
        self._current = result, plans, _ = self._graph_for(bound)
        gm = result.graph_module
        inputs = model_inputs.flat_inputs(gm, bound, result.concrete_args)
        device = run_device([*tensors_in(inputs), *gm.parameters(), *gm.buffers()])
        probe = Probe(device, self.mem_func_name)
        with eval_mode(gm, self.model):
            output, records = run(gm, plans, probe, self.registry, inputs, observer)
        self.records = records
        return output

    def _require_records(self) -> list[NodeRecord]:
        if not self.records:
            raise RuntimeError("no results yet: call propagate() first")
        return self.records

    # -- structured results -------------------------------------------------------------------------
    @property
    def total_flops(self) -> int:
        return aggregate.total_flops(self._require_records())

    @property
    def total_macs(self) -> int:
        return aggregate.total_macs(self._require_records())

    @property
    def unsupported(self) -> list[NodeRecord]:
        """Records of nodes no rule could price."""
        return aggregate.unsupported(self._require_records())

    # -- printing -----------------------------------------------------------------------------------
    def print_result_table(self, show: bool = True) -> list[list[Any]]:
        """Print one row per FX node; return the rows as lists in column order (raw values)."""
        records = self._require_records()
        if show:
            print(render.to_text(records))
        return render.to_rows(records)

    def print_total_flops(self, show: bool = True) -> int:
        """Print ``total_flops = N`` (and what was not counted); return ``N``."""
        records = self._require_records()
        total = aggregate.total_flops(records)
        if show:
            print(render.total_flops_line(total, aggregate.unsupported_by_target(records)))
        return total

    def print_total_time(self, show: bool = True) -> float:
        """Print and return the sum of per-node times in milliseconds."""
        total = aggregate.total_time_ms(self._require_records())
        if show:
            print(f"total_time = {total:.3f} ms")
        return total

    def print_max_memory(self, show: bool = True) -> int | None:
        """Print and return the peak CUDA memory reading in bytes (``None`` on CPU)."""
        peak = aggregate.max_memory_bytes(self._require_records())
        if show:
            print("max_memory = not measured (CPU run)" if peak is None else f"max_memory = {peak:,} B")
        return peak

    def save_result_to_csv(self, path: str | os.PathLike[str], mode: str = "w") -> None:
        """Write the node table as CSV (raw values) to ``path``."""
        with open(path, mode, newline="") as f:
            f.write(render.to_csv(self._require_records()))
