"""``TorchFLOPsByFX``: the façade. It traces, runs, keeps the records, and its ``print_*`` / ``save_*``
methods only call :mod:`torch_flops.aggregate` and :mod:`torch_flops.render`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import stateless
from torch.utils import _pytree as pytree

from torch_flops import aggregate, render
from torch_flops import backward as backward_pass
from torch_flops import device_time
from torch_flops import optimizer_cost
from torch_flops import peaks as device_peaks
from torch_flops import throughput
from torch_flops.arguments import check_bool, check_choice, check_classes, check_int, check_str
from torch_flops import inputs as model_inputs
from torch_flops import memory
from torch_flops.planning import IgnoreSpec, NodeObserver, NodePlan, plan_graph
from torch_flops.layers import layer_rows, params_by_owner
from torch_flops.runner import GraphRunner
from torch_flops.measure import NO_MEMORY, Probe, check_memory_function, gc_paused, run_device, tensors_in
from torch_flops.records import Cost, NodeRecord
from torch_flops.registry import DEFAULT_REGISTRY, CostRegistry, Rule, RuleFn
from torch_flops.rules.attention import ATTENTION_MODES, attention_rules
from torch_flops.model_state import AfterRun, RngState, Versions
from torch_flops.tracer import named_modules
from torch_flops.tracing import TraceResult, check_model, eval_mode, state_tensors, trace
from torch_flops.wrappers import unwrap

VIEWS = ("nodes", "modules", "ops", "layers")


@dataclass
class _Graph:
    """A traced graph for one input signature, with what runs of it reuse: its plans, the modules to
    put in eval mode, and its runner."""

    result: TraceResult
    plans: dict[fx.Node, NodePlan]
    modules: list[nn.Module]
    runner: GraphRunner
    positional: int | None  # how many arguments the call it was traced for passed by position

    @property
    def graph_module(self) -> fx.GraphModule:
        return self.result.graph_module


@dataclass(frozen=True)
class MemorySummary:
    """Activation memory of one run, analytic (see :mod:`torch_flops.memory`) and, on CUDA, as the
    caching allocator counted it (see :mod:`torch_flops.measure`).

    ``peak_activation_bytes``: the analytic peak, while ``peak_node`` runs; ``allocator_peak_bytes``:
    the same with each storage in the allocator's 512-byte blocks. ``measured_peak_bytes``: the most the
    allocator had allocated while a node ran, above the run's baseline (the inputs counted), at
    ``measured_peak_node``, of which ``measured_inside_bytes`` beyond that node's inputs and outputs
    (cuDNN/cuBLAS workspaces, temporaries inside the op); the three are ``None`` off CUDA. Parameters and
    buffers are apart."""

    peak_activation_bytes: int
    peak_node: str
    params_bytes: int
    buffers_bytes: int
    allocator_peak_bytes: int = 0
    measured_peak_bytes: int | None = None
    measured_peak_node: str | None = None
    measured_inside_bytes: int | None = None


@dataclass(frozen=True)
class _BackwardStep:
    """What ``propagate(..., backward=True)`` asked for: the loss, the optimizer, the modules' mode."""

    loss_fn: Callable[[Any], torch.Tensor] | None
    optimizer: Any
    training: bool


@dataclass(frozen=True)
class TrainingMemory:
    """Analytic memory of one training step (``propagate(..., backward=True)``), in bytes.

    ``params_bytes``: every parameter; ``gradient_bytes``: one gradient per parameter that requires
    grad, in its dtype; ``optimizer_state_bytes``: the optimizer's buffers (momentum 1x, Adam/AdamW 2x,
    amsgrad 3x, plus Adam's step counters), 0 without ``optimizer``; ``saved_activation_bytes``: the
    distinct storages autograd saved for the backward (not parameters or buffers);
    ``backward_peak_bytes``: the most the backward had allocated at once (its gradients and
    temporaries). :attr:`peak_bytes` adds them up (gradients are inside the backward's peak): a bound
    from above, since saved activations are freed while the backward runs. It is the peak of a step
    after the first: an optimizer makes its state in its first ``step()``, after that step's backward."""

    params_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    saved_activation_bytes: int
    backward_peak_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.params_bytes + self.optimizer_state_bytes + self.saved_activation_bytes + max(
            self.backward_peak_bytes, self.gradient_bytes)


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
        peak_tflops: the device's dense peak TFLOP/s, one number for the run's dtype or a dict by dtype
            (``{"bf16": 989.5, "fp32": 67}``, keys in :data:`torch_flops.peaks.DTYPE_KEYS` or torch
            dtypes); with ``peak_bandwidth`` (GB/s) it gives % of peak, bound and MFU on any device.
            Without them a CUDA device's peaks come from the table (``docs/peaks.md``); an unknown
            device gets no percentage.
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
        peak_tflops: float | Mapping[Any, float] | None = None,
        peak_bandwidth: float | None = None,
        attention: str = "dense",
    ) -> None:
        check_model(model)
        model = unwrap(model)  # DataParallel, DistributedDataParallel, torch.compile: the model inside
        check_memory_function(mem_func_name)
        leaf_types = check_classes("leaf_types", leaf_types, nn.Module)
        check_bool("auto_leaf", auto_leaf)
        check_choice("attention", attention, ATTENTION_MODES)
        model_inputs.check_state_layouts(model)
        ignore_ops = _check_ignore_ops(ignore_ops)
        if registry is not None and not isinstance(registry, CostRegistry):
            raise TypeError(f"registry must be a CostRegistry, got {type(registry).__name__}")
        if concrete_args is not None and not isinstance(concrete_args, Mapping):
            raise TypeError(f"concrete_args must be a mapping {{parameter name: value}}, got {type(concrete_args).__name__}")
        if extra_rules is not None and not isinstance(extra_rules, Mapping):
            raise TypeError(f"extra_rules must be a mapping {{key: rule}}, got {type(extra_rules).__name__}")
        unknown = sorted(set(concrete_args) - set(model_inputs.forward_signature(model).parameters)) if concrete_args else []
        if unknown:
            raise ValueError(
                f"concrete_args {unknown} are not parameters of {type(model).__name__}.forward"
                f"{model_inputs.forward_signature(model)}"
            )
        self.model = model
        self.mem_func_name = mem_func_name
        self.ignore_ops: tuple[IgnoreSpec, ...] = tuple(ignore_ops)
        self.attention = attention
        self.registry = (registry if registry is not None else DEFAULT_REGISTRY).overlay(
            {**attention_rules(attention), **(extra_rules or {})})
        self.leaf_types = tuple(leaf_types)
        self.leaf_paths = (leaf_modules,) if isinstance(leaf_modules, str) else tuple(leaf_modules)
        self.concrete_args = dict(concrete_args or {})
        self.auto_leaf = auto_leaf
        self.peaks = device_peaks.check_peaks(peak_tflops, peak_bandwidth)
        self.run_device: torch.device | None = None
        self._graphs: dict[Any, _Graph] = {}
        with gc_paused():
            self._current = self._graph_for(model_inputs.default_bound(model))
        self.records: list[NodeRecord] = []
        self.shape_only = False
        self.plain_forward_ms: float | None = None
        self.gpu_busy_fraction: float | None = None  # device time / wall time of the timed runs (CUDA)
        self.timing_note: str | None = None  # a limit of the last run's times (the profiler could not start)
        self.backward_unattributed: Cost | None = None  # backward FLOPs no forward op ran (the loss's)
        self.recompute_unattributed: Cost | None = None  # recomputation charged to no forward op
        self.backward_unattributed_ms: float | None = None  # backward time of no forward op (loss, engine)
        self.optimizer_step: Cost | None = None  # the FLOPs of one optimizer step, with optimizer=
        self._training_memory: TrainingMemory | None = None
        self._liveness: memory.Liveness | None = None
        self._input_info: list[dict[str, Any]] = []

    def _graph_for(self, bound: model_inputs.BoundInputs) -> _Graph:
        """The traced graph, its plans and concrete arguments for inputs like ``bound``.

        A graph is reused only for inputs it was specialised on exactly (tensors in the same places,
        plain values equal: :func:`torch_flops.inputs.input_spec`) and while the model is the tree it
        was traced from (:meth:`~torch_flops.model_state.ModelSnapshot.matches`); otherwise the model is
        traced again."""
        spec = model_inputs.input_spec(bound)
        key = None if spec is None else (spec, tuple(sorted(self.concrete_args.items(), key=lambda kv: kv[0])))
        try:
            entry = self._graphs.get(key) if key is not None else None
        except TypeError:  # an unhashable concrete value: do not cache
            entry, key = None, None
        if entry is not None:
            if entry.result.snapshot is not None and not entry.result.snapshot.matches():
                self._graphs.clear()  # the model changed since: no graph of it is current
            elif "" not in entry.result.leaf_modules or entry.positional == bound.positional:
                return entry  # (a graph of the whole model as one node calls it as the caller did)
        concrete = model_inputs.concrete_args(bound) | self.concrete_args
        result = trace(
            self.model, self.leaf_types, self.leaf_paths, concrete, self.auto_leaf, model_inputs.variadics(bound), bound.positional,
        )
        gm, paths = result.graph_module, result.modules_by_path
        plans = plan_graph(gm, self.registry, self.ignore_ops, paths)
        modules = [gm, *paths.values()]  # the graph module holds only the model's modules: modules_of(gm, model)
        entry = _Graph(result, plans, modules, GraphRunner(gm, plans, self.registry, paths, self.ignore_ops), bound.positional)
        if key is not None:
            self._graphs[key] = entry
        return entry

    @property
    def graph_model(self) -> fx.GraphModule:
        """The graph of the last :meth:`propagate` (or, before it, of tensor inputs and default arguments)."""
        return self._current.graph_module

    @property
    def leaf_modules(self) -> dict[str, str]:
        """Modules kept whole in the current graph, by qualified name ('' for the whole model), with why:
        the first line of the trace error that made them leaves, or ``"named by the user"``."""
        return dict(self._current.result.leaf_modules)

    @property
    def _plans(self) -> dict[fx.Node, NodePlan]:
        return self._current.plans

    # -- running ------------------------------------------------------------------------------------
    def propagate(
        self, *args: Any, timing: bool = True, warmup: int | None = None, repeat: int = 1, backward: bool = False,
        loss_fn: Callable[[Any], torch.Tensor] | None = None, optimizer: Any = None, mode: str = "eval", **kwargs: Any,
    ) -> Any:
        """Run the model on its inputs in eval mode under ``torch.no_grad()`` and record every node.

        Returns the model's output. Afterwards the model's and every submodule's training flag is
        restored. If the inputs or the model live on the ``meta`` device, the run is shape-only (see
        :meth:`propagate_shapes`).

        ``timing=False`` counts FLOPs only, close to the model's own speed, without time, memory or
        byte columns (:mod:`torch_flops.runner`). With timing and ``warmup > 0`` or ``repeat > 1``,
        the graph runs once for the caller (untimed; its output and its effects on inputs, model and
        random generators are the ones the caller sees), ``warmup`` times more untimed, then
        ``repeat`` times timed, on fresh copies of inputs the model writes in place, and the model and
        generators are put back as the first run left them; each node's ``time_ms`` is its median over
        the timed runs (``time_min_ms`` the fastest). When ``repeat > 1`` a plain ``model(...)`` is timed after each
        timed run, interleaved with them so that changing load weighs on both alike, and its median is
        kept for comparison (:attr:`plain_forward_ms`). The names ``timing``, ``warmup`` and ``repeat``
        are this method's own. ``warmup=None`` (the default) means 2 on CUDA, so that no reported time comes
        from a cold call (lazy initialisation, cuDNN/cuBLAS autotuning), and 0 on CPU.

        ``backward=True`` also counts the backward pass of ``loss_fn(output)`` (by default the sum of the
        floating outputs): the forward runs once with autograd, then the gradients of every parameter
        and input that requires grad are computed (``torch.autograd.grad``: no ``.grad`` is written) and
        each backward aten op is charged to the forward op whose autograd node ran it
        (``NodeRecord.backward_flops``, :attr:`total_backward_flops`; :mod:`torch_flops.backward`), with
        its wall time when ``timing`` (``NodeRecord.backward_time_ms``, :attr:`total_backward_time_ms`); the
        forward that activation checkpointing runs again is counted apart (``NodeRecord.recompute_flops``,
        :attr:`total_recompute_flops`).
        Modules are in eval mode, as for the forward count. It counts one step: no ``warmup`` or
        ``repeat``; on meta tensors it is shape-only, as :meth:`propagate_shapes`. ``optimizer`` (with
        ``backward=True``; a ``torch.optim`` SGD, Adam or AdamW class or instance) adds the FLOPs of its
        ``step()`` over the parameters that require grad (:attr:`optimizer_step`; its state's bytes in
        :meth:`training_memory`). ``mode="train"`` (with ``backward=True``) runs the step with the modules
        in training mode (dropout on, BatchNorm on batch statistics), then puts back the buffers it
        wrote and the random generators. The names ``backward``, ``loss_fn``, ``optimizer`` and
        ``mode`` are this method's own.
        """
        check_bool("timing", timing)
        check_bool("backward", backward)
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (output -> one-element tensor), got {type(loss_fn).__name__}")
        check_choice("mode", mode, ("eval", "train"))
        if backward:
            if (warmup or 0) > 0 or repeat != 1:
                raise ValueError(f"backward=True counts one step: warmup and repeat are not supported with it (got warmup={warmup}, repeat={repeat})")
            return self._propagate(args, kwargs, timing=timing, backward=_BackwardStep(loss_fn, optimizer, mode == "train"))
        if loss_fn is not None or optimizer is not None or mode != "eval":
            raise ValueError("loss_fn, optimizer and mode are used with backward=True only")
        if warmup is None:
            first_parameter = next(iter(self.model.parameters()), None)
            tensors = [*tensors_in((args, kwargs)), *([first_parameter] if first_parameter is not None else [])]
            warmup = 2 if timing and run_device(tensors).type == "cuda" else 0
        warmup = check_int("warmup", warmup, minimum=0)
        repeat = check_int("repeat", repeat, minimum=1)
        return self._propagate(args, kwargs, timing=timing, warmup=warmup, repeat=repeat)

    def propagate_shapes(
        self, *args: Any, input_shapes: Sequence[Sequence[int]] | None = None, dtype: torch.dtype = torch.float32,
        backward: bool = False, loss_fn: Callable[[Any], torch.Tensor] | None = None, optimizer: Any = None,
        mode: str = "eval", **kwargs: Any,
    ) -> Any:
        """Count without computing: every tensor input, parameter and buffer is replaced by a ``meta``
        tensor of the same shape and dtype (the model's weights are not copied; they are swapped back
        afterwards), so FLOPs, MACs, shapes and analytic memory come out exactly as in a real run, for
        models of any size. Inputs may be real or meta tensors, or given as ``input_shapes`` (one shape
        per positional input, of ``dtype``). Time and CUDA memory columns are ``None``. Tensors that
        ``forward`` makes without a device (``torch.rand(shape)``) are made on meta too. Ops whose
        control flow depends on tensor values cannot run on meta tensors. The model, its inputs and
        the random generators are left exactly as they were: a shape-only run is not a forward.
        ``backward=True`` counts the backward pass too, as :meth:`propagate` does (the meta stand-ins keep
        ``requires_grad``)."""
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r} ({type(dtype).__name__})")
        if input_shapes is not None:
            input_shapes = _check_shapes(input_shapes)
            args = (*(torch.empty(tuple(shape), dtype=dtype, device="meta") for shape in input_shapes), *args)
        args, kwargs = pytree.tree_map_only(torch.Tensor, _meta_stand_in, (args, kwargs))
        if backward:
            return self.propagate(*args, backward=True, loss_fn=loss_fn, optimizer=optimizer, mode=mode, **kwargs)
        if loss_fn is not None or optimizer is not None or mode != "eval":
            raise ValueError("loss_fn, optimizer and mode are used with backward=True only")
        return self._propagate(args, kwargs)

    def _propagate(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], observer: NodeObserver | None = None,
        timing: bool = True, warmup: int = 0, repeat: int = 1, backward: _BackwardStep | None = None,
    ) -> Any:
        with gc_paused():
            return self._run(args, kwargs, observer, timing, warmup, repeat, backward)

    def _run(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], observer: NodeObserver | None,
        timing: bool, warmup: int, repeat: int, backward: _BackwardStep | None = None,
    ) -> Any:
        self.records = []  # a failed run leaves no stale results behind
        self.backward_unattributed: Cost | None = None
        self.recompute_unattributed: Cost | None = None
        self.backward_unattributed_ms: float | None = None
        self.optimizer_step: Cost | None = None
        self._training_memory: TrainingMemory | None = None
        bound = model_inputs.bind(self.model, args, kwargs)
        self._current = graph = self._graph_for(bound)
        result = graph.result
        self._input_info = [
            {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
            for name, value in bound.values.items() for t in tensors_in(value)
        ]
        gm = result.graph_module
        inputs = model_inputs.flat_inputs(gm, bound, result.concrete_args)
        state = state_tensors(graph.modules)
        shape_only = any([t.is_meta for t in tensors_in(inputs)]) or any([t.is_meta for t in state])
        self.shape_only = shape_only
        if shape_only:  # real inputs to a meta model: their meta stand-ins
            inputs = pytree.tree_map_only(torch.Tensor, _meta_stand_in, inputs)
            if graph.runner.autocast_nodes:
                _warn_autocast_on_meta(graph.runner.autocast_nodes)
        self.plain_forward_ms = self.gpu_busy_fraction = self.timing_note = None
        self.run_device = None  # known after a run with timing, which throughput needs
        if backward is None and not timing and observer is None and not shape_only:
            with eval_mode(modules=graph.modules):
                output, self.records = graph.runner.run_flops(inputs)
            self._liveness = None
            return output
        device = self.run_device = torch.device("meta") if shape_only else run_device([*tensors_in(inputs), *state])
        probe = device_time.probe_for(device, self.mem_func_name)
        timed = timing and not shape_only
        try:
            if backward is not None:
                return self._run_backward(graph, inputs, probe, timed, backward, shape_only)
            with self._scope(graph, shape_only):
                if not timed or (warmup == 0 and repeat == 1):
                    output, records, self._liveness = graph.runner.run(inputs, probe, timing=timed, observer=observer)
                else:
                    output, records, self._liveness = self._run_repeated(graph, bound, inputs, state, probe, observer, warmup, repeat)
            self.records = records
            return output
        finally:
            probe.abandon()  # after a node failed: no profiler left recording
            if isinstance(probe, device_time.ProfiledProbe):
                self.timing_note = probe.note
                busy = [f for run in probe.runs if (f := run.busy_fraction) is not None] if probe.on_cuda else []
                self.gpu_busy_fraction = statistics.median(busy) if busy else None

    @contextlib.contextmanager
    def _scope(self, graph: _Graph, shape_only: bool, training: bool = False) -> Iterator[dict[str, torch.Tensor] | None]:
        """The graph's modules in eval mode (train mode with ``training``) for a run; in a shape-only run
        also the meta stand-ins of the parameters and buffers, swapped in (and yielded), tensors made
        without a device (``torch.rand(shape)``) made on meta, and the model put back as it was after
        (a shape-only run is not a forward)."""
        gm = graph.graph_module
        stand_ins = _meta_state(gm) if shape_only else None
        swap = _reparametrize(gm, stand_ins) if shape_only else contextlib.nullcontext()
        made_on = torch.device("meta") if shape_only else contextlib.nullcontext()
        before = AfterRun(named_modules(self.model), ()) if shape_only else None
        try:
            with eval_mode(modules=graph.modules, training=training), swap, made_on:
                yield stand_ins
        finally:
            if before is not None:
                before.restore()

    def _run_backward(
        self, graph: _Graph, inputs: list[Any], probe: Probe, timing: bool, step: _BackwardStep, shape_only: bool,
    ) -> Any:
        """The forward with autograd (each op claiming the autograd nodes it made), then the backward
        under the aten-level counter; the records get each op's backward cost. Shape-only: on meta
        stand-ins of the parameters (which keep ``requires_grad``), the model left as it was. In train
        mode the buffers the step writes (BatchNorm's running statistics, inside its kernel, where no
        version counter moves) and the random generators are put back after."""
        pristine = [(b, b.clone()) for b in dict.fromkeys(b for m in graph.modules for b in m.buffers(recurse=False))
                    if not b.is_meta] if step.training else []
        rng = RngState() if step.training else None
        try:
            with self._scope(graph, shape_only, step.training) as stand_ins:
                parameters = dict.fromkeys(stand_ins.values() if stand_ins is not None else self.model.parameters())
                output, mode, saved_bytes = self._forward_and_backward(graph, inputs, probe, timing, step.loss_fn, parameters)
        finally:
            with torch.no_grad():
                for buffer, copy in pristine:
                    buffer.copy_(copy)
            if rng is not None:
                rng.restore()
        rest = mode.by_owner.get(backward_pass.UNATTRIBUTED)
        self.backward_unattributed = rest.cost if rest is not None else Cost(0, 0)
        rest = mode.recomputed.get(backward_pass.UNATTRIBUTED)
        self.recompute_unattributed = rest.cost if rest is not None else Cost(0, 0)
        seconds = mode.seconds
        self.records = [_with_backward(record, mode.by_owner.get(record.name), mode.recomputed.get(record.name),
                                       None if seconds is None else seconds.get(record.name, 0.0))
                        for record in self.records]
        named = {record.name for record in self.records}
        self.backward_unattributed_ms = None if seconds is None else 1000.0 * sum(
            s for owner, s in seconds.items() if owner not in named)
        trainable = [p for p in parameters if p.requires_grad]
        optimizer = step.optimizer
        priced = None if isinstance(optimizer, torch.optim.Optimizer) else trainable  # an instance has its own
        self.optimizer_step = None if optimizer is None else optimizer_cost.optimizer_step_cost(optimizer, priced)
        self._training_memory = TrainingMemory(
            params_bytes=memory.bytes_of(parameters),
            gradient_bytes=memory.bytes_of(trainable),
            optimizer_state_bytes=0 if optimizer is None else optimizer_cost.optimizer_state_bytes(optimizer, priced),
            saved_activation_bytes=saved_bytes,
            backward_peak_bytes=mode.peak_bytes,
        )
        return output

    def _forward_and_backward(
        self, graph: _Graph, inputs: list[Any], probe: Probe, timing: bool, loss_fn: Callable[[Any], torch.Tensor] | None,
        parameters: Iterable[torch.Tensor],
    ) -> tuple[Any, backward_pass.BackwardCostMode, int]:
        """One forward with autograd (each op claiming the autograd nodes it made), the loss, and the
        gradients of the parameters and inputs that require grad under the backward counter; returns
        the output, the counter and the bytes autograd saved."""
        owners = backward_pass.AutogradOwners()
        saved = backward_pass.SavedTensors([*parameters, *state_tensors(graph.modules)])
        with saved.hooks():
            output, records, self._liveness = graph.runner.run(inputs, probe, timing=timing, claim=owners.claim)
        if loss_fn is None:
            loss = backward_pass.default_loss(output)
        else:
            try:
                loss = loss_fn(output)
            except Exception as error:
                name = getattr(loss_fn, "__qualname__", type(loss_fn).__name__)
                raise RuntimeError(f"loss_fn {name} raised {type(error).__name__}: {error}") from error
        targets = [*(p for p in parameters if p.requires_grad), *(t for t in tensors_in(inputs) if t.requires_grad)]
        alive = [*parameters, *tensors_in(inputs), *tensors_in(output), loss, *saved.tensors]
        first_record: dict[str, str] = {}  # a module's recomputation is charged to its first record
        for record in records:
            if record.op not in ("placeholder", "output"):
                first_record.setdefault(record.module_path, record.name)
        mode = backward_pass.run_backward(
            loss, targets, self.registry, owners, existing=alive, probe=probe if timing else None,
            modules={id(module): path for path, module in named_modules(self.model)}, recompute_owners=first_record,
        )
        self.records = records
        return output, mode, saved.bytes

    def training_memory(self) -> TrainingMemory:
        """Memory of the last ``propagate(..., backward=True)``'s step, analytic (any device)."""
        if self._training_memory is None:
            raise RuntimeError("no backward pass counted: call propagate(..., backward=True)")
        return self._training_memory

    @property
    def total_backward_flops(self) -> int:
        """FLOPs of the last ``propagate(..., backward=True)``'s backward pass (its ops that have a rule)."""
        return self._backward_sum("backward_flops", self.backward_unattributed, "flops")

    @property
    def total_backward_macs(self) -> int:
        """MACs of the last ``propagate(..., backward=True)``'s backward pass (its ops that have a rule)."""
        return self._backward_sum("backward_macs", self.backward_unattributed, "macs")

    @property
    def total_recompute_macs(self) -> int:
        """MACs the last backward pass spent recomputing checkpointed forwards (0 without checkpointing)."""
        return self._backward_sum("recompute_macs", self.recompute_unattributed, "macs")

    @property
    def total_recompute_flops(self) -> int:
        """FLOPs the last backward pass spent recomputing checkpointed forwards (not in
        :attr:`total_backward_flops`; 0 without checkpointing)."""
        return self._backward_sum("recompute_flops", self.recompute_unattributed, "flops")

    @property
    def total_backward_time_ms(self) -> float | None:
        """Wall time of the last backward pass, the records' and the unattributed remainder's (``None``
        when it was not timed: ``timing=False`` or shape-only)."""
        self._require_backward()
        if self.backward_unattributed_ms is None:
            return None
        return aggregate.total(self._require_records(), "backward_time_ms") + self.backward_unattributed_ms

    def _backward_sum(self, field: str, rest: Cost | None, unit: str) -> int:
        """The records' ``field`` summed, plus ``rest``'s ``unit``: what no forward op was charged (the loss's)."""
        self._require_backward()
        return aggregate.total(self._require_records(), field) + getattr(rest, unit)

    def _require_backward(self) -> None:
        if self.backward_unattributed is None:
            raise RuntimeError("no backward pass counted: call propagate(..., backward=True)")

    def _run_repeated(
        self, graph: _Graph, bound: model_inputs.BoundInputs, inputs: list[Any], state: list[torch.Tensor], probe: Probe,
        observer: NodeObserver | None, warmup: int, repeat: int,
    ) -> tuple[Any, list[NodeRecord], memory.Liveness]:
        """One run on the caller's inputs, whose output, records and effects the caller gets, then
        ``warmup`` untimed and ``repeat`` timed runs, each followed by a timed plain forward when
        ``repeat > 1``; the records take each node's median and fastest time over the timed runs.

        The extra runs leave no trace: they run on fresh copies of the inputs when the first run wrote
        to them in place, and afterwards the model's attributes, the parameters and buffers the first
        run wrote, and the random number generators are put back as the first run left them."""
        pristine = _clone_tensors(inputs)
        input_versions, state_versions = Versions(tensors_in(inputs)), Versions(state)
        output, records, liveness = graph.runner.run(inputs, probe, timing=False, observer=observer)
        inputs_written = bool(input_versions.written())
        fresh = (lambda: _clone_tensors(pristine)) if inputs_written else (lambda: inputs)  # noqa: E731
        after_first = AfterRun(named_modules(self.model), state_versions.written())
        try:
            for _ in range(warmup):
                graph.runner.run_flops(fresh())
            plain = _PlainForward(self.model, bound, probe, copy_inputs=inputs_written) if repeat > 1 else None
            if plain is not None:
                plain.warm_up()
            timed_runs = []
            for _ in range(repeat):
                timed_runs.append(graph.runner.run(fresh(), probe, timing=True)[1])
                if plain is not None:
                    plain.time()
        finally:
            after_first.restore()
        if plain is not None:
            self.plain_forward_ms = statistics.median(plain.times_ms)
        return output, _median_times(records, timed_runs), liveness

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
        """Print ``total_flops = N`` (and what was not counted), and after a backward pass the forward,
        backward, recomputation and their sum in FLOPs and MACs (:func:`render.step_totals_line`); return
        ``N``, the forward's FLOPs."""
        records = self._require_records()
        total = aggregate.total_flops(records)
        if show:
            line = render.total_flops_line(total, aggregate.unsupported_by_target(records))
            if self.backward_unattributed is not None:
                line += "\n" + self.step_totals_line()
            print(line)
        return total

    def step_totals_line(self) -> str:
        """The forward, backward and recomputation of the last ``propagate(..., backward=True)`` and their
        sum, in FLOPs and MACs, as one line (:func:`render.step_totals_line`)."""
        return render.step_totals_line(Cost(self.total_flops, self.total_macs),
                                       Cost(self.total_backward_flops, self.total_backward_macs),
                                       Cost(self.total_recompute_flops, self.total_recompute_macs))

    def print_total_time(self, show: bool = True) -> float:
        """Print and return the sum of per-node times (medians when ``repeat > 1``) in milliseconds,
        beside a plain forward's median when one was timed."""
        total = aggregate.total_time_ms(self._require_records())
        if show:
            line = f"total_time = {total:.3f} ms"
            if self.plain_forward_ms is not None:
                line += f" (sum of per-node medians; a plain forward takes {self.plain_forward_ms:.3f} ms)"
            if self.gpu_busy_fraction is not None:
                line += f"; GPU busy {100 * self.gpu_busy_fraction:.1f} % of the run's wall time"
            if self.timing_note is not None:
                line += f"\nnote: {self.timing_note}"
            print(line)
        return total

    def activation_memory(self) -> MemorySummary:
        """Memory of the last run: the analytic peak of live activations (any device) and the node
        running when it occurs, beside the CUDA allocator's measured peak on CUDA, and the bytes of
        parameters and buffers, counted separately (:class:`MemorySummary`)."""
        records = self._require_records()
        live = self._liveness
        if live is None:
            raise RuntimeError("no memory analysis in a FLOPs-only run: propagate with timing=True")
        measured = max((r for r in records if r.mem_peak_bytes is not None), key=lambda r: r.mem_peak_bytes, default=None)
        return MemorySummary(
            peak_activation_bytes=live.peak_bytes,
            peak_node=self._current.runner.nodes[live.peak_index].name if records else "",
            params_bytes=sum(memory.tensor_bytes(p) for p in self.model.parameters()),
            buffers_bytes=sum(memory.tensor_bytes(b) for b in self.model.buffers()),
            allocator_peak_bytes=live.allocator_peak_bytes,
            measured_peak_bytes=None if measured is None else measured.mem_peak_bytes,
            measured_peak_node=None if measured is None else measured.name,
            measured_inside_bytes=None if measured is None else measured.mem_inside_bytes,
        )

    def print_activation_memory(self, show: bool = True) -> MemorySummary:
        """Print and return :meth:`activation_memory`."""
        summary = self.activation_memory()
        if show:
            print(render.activation_memory_text(summary))
        return summary

    def print_max_memory(self, show: bool = True) -> int | None:
        """Print and return the peak CUDA memory reading in bytes (``None`` on CPU)."""
        peak = aggregate.max_memory_bytes(self._require_records())
        if show:
            print("max_memory = not measured (CPU run)" if peak is None else f"max_memory = {peak:,} B")
        return peak

    # -- views and exports ---------------------------------------------------------------------------
    def by_module(self, depth: int | None = None, sort: str = "path", top: int | None = None) -> list[aggregate.ModuleRow]:
        """The module hierarchy (see :func:`torch_flops.aggregate.by_module`), ``depth`` levels below the
        root; ``sort`` by ``"path"`` (tree order) or a numeric field (``"flops"``, ``"macs"``,
        ``"params"``, ``"time_ms"``, ``"self_flops"`` ...), largest first; the first ``top`` rows."""
        depth = check_int("depth", depth, minimum=0, optional=True)
        check_str("sort", sort)
        top = check_int("top", top, minimum=1, optional=True)
        rows = aggregate.by_module(
            self._require_records(), type(self.model).__name__, params_by_owner(self.model), depth,
            {name: type(m).__name__ for name, m in self.model.named_modules()},
        )
        return aggregate.sort_rows(rows, sort, top)

    def by_op_type(self, sort: str = "flops", top: int | None = None) -> list[aggregate.OpTypeRow]:
        """FLOPs, MACs, count and time per op type (``nn.Conv2d``, ``operator.add``, ``aten.mm`` ...)."""
        check_str("sort", sort)
        top = check_int("top", top, minimum=1, optional=True)
        return aggregate.sort_rows(aggregate.by_op_type(self._require_records()), sort, top)

    def report(
        self, view: str = "modules", format: str = "text", depth: int | None = None, top: int | None = None,
        sort: str | None = None, unit: str = "flops",
    ) -> str:
        """One view as text, Markdown, CSV or JSON. ``view``: ``"nodes"`` (one row per FX node),
        ``"modules"`` (the hierarchy, ``depth`` levels), ``"ops"`` (by op type) or ``"layers"`` (the
        layer-wise view of :func:`torch_flops.profile`). ``unit``: ``"flops"`` or ``"macs"``."""
        render.check_choice("view", view, VIEWS)
        render.check_choice("format", format, render.VIEW_KINDS)
        render.check_choice("unit", unit, render.UNITS)
        depth = check_int("depth", depth, minimum=0, optional=True)
        top = check_int("top", top, minimum=1, optional=True)
        check_str("sort", sort, optional=True)
        records = self._require_records()
        if view == "nodes":
            rows: list[Any] = list(records)
            if sort is not None or top is not None:
                rows = aggregate.sort_rows(rows, sort or unit, top)
        elif view == "modules":
            rows = self.by_module(depth, sort or "path", top)
        elif view == "ops":
            rows = self.by_op_type(sort or ("flops" if unit == "flops" else "macs"), top)
        else:
            rows, layer_total = layer_rows(self.model, records, unit=unit)
            if sort is not None or top is not None:
                rows = aggregate.sort_rows(rows, sort or unit, top)
        if format == "json":  # the document has the throughput fields of its own
            return json.dumps(self.to_json_document(view, rows, unit), indent=1)
        backward, backward_time = self.backward_unattributed is not None, self.backward_unattributed_ms is not None
        host_time = any(r.host_time_ms is not None for r in records)
        if view == "layers":
            return render.to_layer_table(rows, layer_total, format, unit=unit, backward=backward)
        run = self.throughput_summary()
        rates, known = throughput.for_view(view, rows, records, run), run.peak_tflops is not None
        if view == "nodes":
            return render.node_table(rows, unit, format, rates, known)
        total = self.total_flops if unit == "flops" else self.total_macs
        if view == "modules":
            return render.module_table(rows, total, unit, format, rates, known, backward, backward_time, host_time)
        return render.op_type_table(rows, total, unit, format, rates, known, backward, backward_time, host_time)

    def throughput_summary(self) -> throughput.Summary:
        """The last run against the device: achieved TFLOP/s and GB/s of the whole forward, the peaks used
        (the user's, else the table's for a CUDA device) for the run's dtype, and MFU; without peaks,
        ``message`` says how to pass them (:mod:`torch_flops.throughput`)."""
        records = self._require_records()
        found, message = throughput.resolve_peaks(self.peaks, self.run_device)
        input_dtypes = [getattr(torch, info["dtype"]) for info in self._input_info]
        key = throughput.dtype_key_of_run(self.model, input_dtypes, self.run_device)
        return throughput.summary(records, found, key, message)

    def plot_roofline(self, path: str | os.PathLike[str], top: int = 8, title: str | None = None) -> None:
        """Write a roofline picture of the last run to ``path`` (PNG, SVG, PDF by its suffix): arithmetic
        intensity against achieved TFLOP/s, log-log, one point per timed node sized by its time, the
        ``top`` costliest labelled, and the device's two ceilings when its peaks are known. Needs
        matplotlib (``pip install 'torch_flops[plot]'``)."""
        from torch_flops import roofline

        roofline.plot_roofline(self._require_records(), self.throughput_summary(), path, top=top, title=title)

    def to_json_document(self, view: str, rows: list[Any], unit: str = "flops") -> dict[str, Any]:
        records = self._require_records()
        run = self.throughput_summary()
        rates = throughput.for_view(view, rows, records, run)
        row_fields = None if rates is None else [render.throughput_fields(t, run.peak_tflops is not None) for t in rates]
        totals = {
            "flops": aggregate.total_flops(records),
            "macs": aggregate.total_macs(records),
            "params": sum(p.numel() for p in self.model.parameters()),
            "time_ms": aggregate.total_time_ms(records),
            "unsupported_nodes": len(aggregate.unsupported(records)),
        }
        if self.backward_unattributed is not None:  # after a backward pass
            totals |= {"backward_flops": self.total_backward_flops, "backward_macs": self.total_backward_macs,
                       "recompute_flops": self.total_recompute_flops, "recompute_macs": self.total_recompute_macs,
                       "backward_time_ms": self.total_backward_time_ms}
            totals |= {f"total_{unit}": totals[unit] + totals[f"backward_{unit}"] + totals[f"recompute_{unit}"]
                       for unit in render.UNITS}
            row_fields = [{**more, **render.step_total_fields(row)} for row, more in zip(rows, row_fields or [{}] * len(rows))]
        return render.to_json_document(
            view, rows, model=type(self.model).__name__, inputs=self._input_info, totals=totals, unit=unit,
            extra={"leaf_modules": self.leaf_modules, "throughput": throughput.summary_fields(run)}, row_fields=row_fields,
        )

    def to_dataframe(self, view: str = "nodes", depth: int | None = None):
        """The view's rows as a ``pandas.DataFrame`` (pandas is not a dependency: install it to use this)."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from error
        document = json.loads(self.report(view, "json", depth=depth))
        return pd.DataFrame(document["rows"])

    def save_result_to_csv(self, path: str | os.PathLike[str], mode: str = "w") -> None:
        """Write the node table as CSV (raw values) to ``path``."""
        text = render.to_csv(self._require_records())  # before opening: no results, no truncated file
        with open(path, mode, newline="") as f:
            f.write(text)


def _warn_autocast_on_meta(names: Sequence[str]) -> None:
    """Say that a shape-only run prices the autocast regions of ``forward`` at their inputs' dtypes."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    warnings.warn(
        f"shape-only run: {len(names)} nodes run inside torch.autocast regions of forward ({shown}); PyTorch "
        "does not autocast meta tensors, so they run, and their bytes and saved activations are counted, in "
        "their inputs' dtypes, not in the autocast dtype a real run on that device gives them",
        stacklevel=5,
    )


def _reparametrize(module: nn.Module, tensors: Mapping[str, torch.Tensor]):
    """Swap ``module``'s parameters and buffers for ``tensors`` (meta stand-ins) for one run; restored after."""
    return stateless._reparametrize_module(module, dict(tensors), tie_weights=True, strict=False)


def _meta_stand_in(tensor: torch.Tensor) -> torch.Tensor:
    """A meta tensor of ``tensor``'s shape, dtype and ``requires_grad`` (``tensor`` itself if on meta)."""
    if tensor.is_meta:
        return tensor
    return torch.empty_like(tensor, device="meta").requires_grad_(tensor.requires_grad)


def _meta_state(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    """A meta stand-in for every parameter and buffer name of ``gm``; names of one tensor (tied weights,
    such as a language model's embedding and output layer) share one stand-in, so they stay tied."""
    state = dict(gm.named_parameters(remove_duplicate=False)) | dict(gm.named_buffers(remove_duplicate=False))
    stand_ins: dict[int, torch.Tensor] = {}
    for t in state.values():
        if id(t) not in stand_ins:
            stand_ins[id(t)] = _meta_stand_in(t)
    return {name: stand_ins[id(t)] for name, t in state.items()}


def _clone_tensors(values: Any) -> Any:
    """``values`` with every tensor in it replaced by a copy."""
    return pytree.tree_map_only(torch.Tensor, torch.Tensor.clone, values)


def _with_backward(record: NodeRecord, tally: Any, recomputed: Any, seconds: float | None) -> NodeRecord:
    """``record`` with the backward cost its autograd nodes ran and the recomputation charged to it
    (``tally``, ``recomputed``: ``None`` when there was none), and their wall time (``None``: not timed)."""
    fields: dict[str, Any] = {"backward_time_ms": None if seconds is None else 1000.0 * seconds}
    unsupported = [*(tally.unsupported if tally is not None else ()), *(recomputed.unsupported if recomputed is not None else ())]
    if unsupported:
        fields["backward_unsupported_ops"] = tuple(dict.fromkeys(unsupported))
    if tally is None or not tally.unsupported:
        cost = tally.cost if tally is not None else Cost(0, 0)
        fields |= {"backward_flops": cost.flops, "backward_macs": cost.macs}
    if recomputed is None or not recomputed.unsupported:
        cost = recomputed.cost if recomputed is not None else Cost(0, 0)
        fields |= {"recompute_flops": cost.flops, "recompute_macs": cost.macs}
    return dataclasses.replace(record, **fields)


def _median_times(records: list[NodeRecord], runs: list[list[NodeRecord]]) -> list[NodeRecord]:
    """``records`` with each record's median and minimum time (and median host time, when known) over
    ``runs`` (matched by name: a leaf may make other calls in another run), and the CUDA memory readings
    of the last of them, so that they too come from a warm run (not from lazy initialisation, such as a
    cuBLAS workspace allocated at the first matrix product)."""
    by_name = [{r.name: r for r in run} for run in runs]
    out = []
    for record in records:
        timed = [r for run in by_name if (r := run.get(record.name)) is not None and r.time_ms is not None]
        if not timed:
            out.append(record)
            continue
        times = [r.time_ms for r in timed]
        hosts = [r.host_time_ms for r in timed if r.host_time_ms is not None]
        last = timed[-1]
        out.append(dataclasses.replace(record, time_ms=statistics.median(times), time_min_ms=min(times),
                                       host_time_ms=statistics.median(hosts) if hosts else None,
                                       **{name: getattr(last, name) for name in NO_MEMORY}))
    return out


class _PlainForward:
    """Times plain ``model(...)`` calls on a run's inputs under ``torch.no_grad``, one at a time.

    The caller times one after each timed graph run, so that load which changes while the runs go on
    weighs on the graph's times and the plain forward's alike."""

    def __init__(self, model: nn.Module, bound: model_inputs.BoundInputs, probe: Probe, copy_inputs: bool = False) -> None:
        self._model = model
        self._arguments = model_inputs.call_arguments(bound)
        self._copy_inputs = copy_inputs  # each call on fresh copies of the inputs (the model writes to them)
        self._probe = probe
        self.times_ms: list[float] = []

    def _call_arguments(self) -> tuple[list[Any], dict[str, Any]]:
        return _clone_tensors(self._arguments) if self._copy_inputs else self._arguments

    def warm_up(self) -> None:
        """One untimed call."""
        args, kwargs = self._call_arguments()
        with torch.no_grad():
            self._model(*args, **kwargs)

    def time(self) -> float:
        """Time one call; return and keep its milliseconds."""
        args, kwargs = self._call_arguments()
        with torch.no_grad():
            start = self._probe.now()
            self._model(*args, **kwargs)
            elapsed = (self._probe.now() - start) * 1000.0
        self.times_ms.append(elapsed)
        return elapsed


def _check_shapes(input_shapes: Any) -> list[tuple[int, ...]]:
    """``input_shapes`` as a list of shapes, each a sequence of non-negative ints."""
    if isinstance(input_shapes, (str, bytes)) or not isinstance(input_shapes, Iterable):
        raise TypeError(f"input_shapes must be a list of shapes such as [(1, 3, 224, 224)], got {input_shapes!r}")
    shapes = []
    for i, shape in enumerate(input_shapes):
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
            raise TypeError(f"input_shapes[{i}] must be a shape such as (1, 3, 224, 224), got {shape!r}")
        shapes.append(tuple(check_int(f"input_shapes[{i}][{j}]", size, minimum=0) for j, size in enumerate(shape)))
    return shapes


def _check_ignore_ops(ignore_ops: Any) -> list[IgnoreSpec]:
    """``ignore_ops`` as a list of module classes, functions and method names (``None``: nothing)."""
    if ignore_ops is None:
        return []
    if isinstance(ignore_ops, (str, type)) or callable(ignore_ops) and not isinstance(ignore_ops, nn.Module):
        ignore_ops = [ignore_ops]
    try:
        specs = list(ignore_ops)
    except TypeError:
        raise TypeError(f"ignore_ops must be module classes, functions or method names, got {ignore_ops!r}") from None
    for spec in specs:
        if isinstance(spec, nn.Module):
            raise TypeError(f"ignore_ops takes module classes, got an instance of {type(spec).__name__}: pass the class")
        if not (isinstance(spec, (str, type)) or callable(spec)):
            raise TypeError(f"ignore_ops must be module classes, functions or method names, got {spec!r}")
    return specs
