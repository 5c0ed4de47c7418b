"""``TorchFLOPsByFX``: the façade. It traces, runs, keeps the records, and its ``print_*`` / ``save_*``
methods only call :mod:`torch_flops.aggregate` and :mod:`torch_flops.render`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch.fx as fx
from torch import nn

from torch_flops import aggregate, render
from torch_flops.interpreter import IgnoreSpec, NodeObserver, bind_inputs, plan_graph, run
from torch_flops.measure import Probe, check_memory_function, run_device, tensors_in
from torch_flops.records import NodeRecord
from torch_flops.registry import DEFAULT_REGISTRY, CostRegistry, Rule, RuleFn
from torch_flops.tracing import eval_mode, trace


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
    """

    def __init__(
        self,
        model: nn.Module,
        mem_func_name: str = "max_memory_allocated",
        ignore_ops: Iterable[IgnoreSpec] | IgnoreSpec = (),
        registry: CostRegistry | None = None,
        leaf_types: tuple[type, ...] = (),
        extra_rules: Mapping[Any, Rule | RuleFn] | None = None,
    ) -> None:
        check_memory_function(mem_func_name)
        if isinstance(ignore_ops, (str, type)) or callable(ignore_ops):
            ignore_ops = [ignore_ops]
        self.model = model
        self.mem_func_name = mem_func_name
        self.ignore_ops: tuple[IgnoreSpec, ...] = tuple(ignore_ops)
        self.registry = (registry or DEFAULT_REGISTRY).overlay(extra_rules or {})
        self.graph_model: fx.GraphModule = trace(model, leaf_types)
        self._plans = plan_graph(self.graph_model, self.registry, self.ignore_ops)
        self.records: list[NodeRecord] = []

    # -- running ------------------------------------------------------------------------------------
    def propagate(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model on real inputs in eval mode under ``torch.no_grad()`` and record every node.

        Returns the model's output. Afterwards the model's and every submodule's training flag is
        restored.
        """
        return self._propagate(args, kwargs)

    def _propagate(self, args: tuple[Any, ...], kwargs: dict[str, Any], observer: NodeObserver | None = None) -> Any:
        inputs = bind_inputs(self.graph_model, args, kwargs)
        device = run_device([*tensors_in(inputs), *self.graph_model.parameters(), *self.graph_model.buffers()])
        probe = Probe(device, self.mem_func_name)
        with eval_mode(self.graph_model, self.model):
            output, records = run(self.graph_model, self._plans, probe, self.registry, inputs, observer)
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
