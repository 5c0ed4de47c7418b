"""What is known about each node before it runs, and how a node is priced.

:func:`plan_graph` resolves every node's rule once per graph (a :class:`NodePlan`: rule, labels, owning
module); :func:`start_fallback` runs a node without one: a leaf module op by op
(:mod:`torch_flops.op_capture`), anything else under the aten-level counter (:mod:`torch_flops.fallback`). The errors a run raises
name the node, its target, its module and the shapes it saw. :mod:`torch_flops.runner` runs the graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from torch_flops.fallback import AllocationMode, AtenCostMode
from torch_flops.labels import function_label
from torch_flops.measure import Probe, describe_inputs, tensors_in
from torch_flops.op_capture import OpCapture
from torch_flops.records import ZERO_COST, AtenOpCost, Cost, Shape, Status, frozen_from_dict
from torch_flops.registry import CostRegistry, CostRuleError, OpCall, Rule, runs_class_forward, valid_cost
from torch_flops.tracer import CHECKPOINT_FUNCTIONS
from torch_flops.tracing import ROOT_LEAF

IgnoreSpec = type | Callable[..., Any] | str
NodeObserver = Callable[[fx.Node, "NodePlan", tuple, dict, Any], None]


class NodeExecutionError(RuntimeError):
    """A node raised while running; the message names the node, its target and the shapes it saw."""

    def __init__(self, message: str, node_name: str) -> None:
        super().__init__(message)
        self.node_name = node_name


@dataclass(frozen=True)
class NodePlan:
    """What is known about a node before it runs."""

    target: str
    module_path: str
    module_class: str
    rule: Rule | None
    ignored: bool
    module: nn.Module | None
    module_qualname: str | None = None  # of a call_module node's module ('' for the whole model)

    @property
    def fallback(self) -> bool:
        """Priced by the aten-level counter: an op node that has no rule and is not ignored."""
        return self.rule is None and not self.ignored


def target_label(node: fx.Node) -> str:
    if node.op == "call_function":
        return function_label(node.target)
    return str(node.target)


def owning_module(node: fx.Node) -> tuple[str, str]:
    """(qualified path, class name) of the innermost module whose ``forward`` created ``node``."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return "", ""
    key = next(reversed(stack))  # the innermost module's entry is the last
    entry = stack[key]
    if type(entry) is tuple and type(entry[0]) is str and type(entry[1]) is type:  # the common case, quickly
        return entry[0], entry[1].__name__
    if isinstance(entry, tuple):  # torch >= 2.0: (qualified name, type)
        path, cls = entry
    else:  # older: the type only
        path, cls = key, entry
    return str(path), getattr(cls, "__name__", str(cls))


def _is_ignored(node: fx.Node, module: nn.Module | None, ignore: Collection[IgnoreSpec]) -> bool:
    if node.op == "call_module":
        return any(isinstance(spec, type) and isinstance(module, spec) for spec in ignore)
    if node.op == "call_method":
        return node.target in ignore
    if node.op == "call_function":
        return any(spec is node.target for spec in ignore)
    return False


def plan_graph(
    gm: fx.GraphModule, registry: CostRegistry, ignore: Collection[IgnoreSpec], modules_by_path: Mapping[str, nn.Module] | None = None,
) -> dict[fx.Node, NodePlan]:
    """Resolve every node's rule once, before any tensor runs (lookups are shared by nodes with the
    same module class, function or method). ``modules_by_path``: the modules ``gm`` holds at those
    paths, when known (the traced model's ``named_modules()``), looked up before ``gm`` is walked."""
    plans: dict[fx.Node, NodePlan] = {}
    rules: dict[tuple[str, Any], Rule | None] = {}
    labels: dict[Any, str] = {}
    for node in gm.graph.nodes:
        module = None
        if node.op == "call_module":
            module = submodule(gm, node.target, modules_by_path)
            key: tuple[str, Any] = (node.op, type(module))
        elif node.op in ("call_function", "call_method"):
            key = (node.op, node.target)
        else:  # placeholder, get_attr, output
            key = ("", None)
        try:
            rule = rules[key]
        except KeyError:
            rule = rules[key] = _lookup_rule(registry, node, module)
        except TypeError:  # an unhashable target
            rule = _lookup_rule(registry, node, module)
        if module is not None and rule is not None and not runs_class_forward(module):
            rule = None  # a hook, parametrisation or forward of its own: counted by what it runs
        path, cls = owning_module(node)
        qualname = None
        if node.op == "call_function" and rule is None:
            module, qualname = checkpointed_module(gm, node, modules_by_path)
        if node.op == "call_function":
            try:
                label = labels[node.target]
            except KeyError:
                label = labels[node.target] = target_label(node)
            except TypeError:
                label = target_label(node)
        else:
            label = str(node.target)
        if node.op == "call_module":
            qualname = str(node.target)
            if qualname == ROOT_LEAF and getattr(gm, ROOT_LEAF, None) is module:  # the whole model as one node
                label, qualname, path, cls = "(root)", "", "", type(module).__name__
        ignored = bool(ignore) and _is_ignored(node, module, ignore)
        plans[node] = frozen_from_dict(NodePlan, {"target": label, "module_path": path, "module_class": cls, "rule": rule,
                                                  "ignored": ignored, "module": module, "module_qualname": qualname})
    return plans


def checkpointed_module(
    gm: fx.GraphModule, node: fx.Node, modules_by_path: Mapping[str, nn.Module] | None = None,
) -> tuple[nn.Module | None, str | None]:
    """The module and its path that a ``torch.utils.checkpoint.checkpoint(module, ...)`` or
    ``checkpoint_sequential(module, segments, ...)`` node runs (so that its calls are counted op by op,
    under that module's name), else ``(None, None)``."""
    if node.target not in CHECKPOINT_FUNCTIONS or not node.args:
        return None, None
    first = node.args[0]
    if not isinstance(first, fx.Node) or first.op != "get_attr":
        return None, None
    module = submodule(gm, first.target, modules_by_path)
    return (module, str(first.target)) if isinstance(module, nn.Module) else (None, None)


def submodule(root: nn.Module, target: str, modules_by_path: Mapping[str, nn.Module] | None = None) -> nn.Module:
    """``root.get_submodule(target)``: from ``modules_by_path`` (the modules ``root`` holds at those
    paths) when it has ``target``, else read from the ``_modules`` tables (``get_submodule`` goes through
    ``nn.Module.__getattr__`` for every part of the path)."""
    if modules_by_path is not None and target:
        found = modules_by_path.get(target)
        if found is not None:
            return found
    module = root
    try:
        for part in target.split("."):
            module = module._modules[part]
    except (KeyError, AttributeError):
        return root.get_submodule(target)  # not a registered path: its error message, or what it finds
    if module is None:
        return root.get_submodule(target)
    return module


def _lookup_rule(registry: CostRegistry, node: fx.Node, module: nn.Module | None) -> Rule | None:
    if node.op == "call_module":
        return registry.class_rule(type(module))
    if node.op == "call_function":
        return registry.function_rule(node.target)
    if node.op == "call_method":
        return registry.method_rule(node.target)
    return _STRUCTURAL


def _structural(call: OpCall) -> Cost:
    """Known zero: graph inputs, attribute reads and the output."""
    return ZERO_COST


_STRUCTURAL = Rule(_structural, known_zero=True)


def _shapes(value: Any) -> tuple[Shape, ...]:
    return tuple(tuple(t.shape) for t in tensors_in(value))


def node_error(n: fx.Node, plan: NodePlan, args: tuple, kwargs: dict, error: Exception) -> Exception:
    """The error to raise when running node ``n`` raised ``error``: a :class:`CostRuleError` (an aten
    rule of the fallback failed) or a :class:`NodeExecutionError`, naming the node, its target, its
    module and the shapes it saw."""
    if isinstance(error, CostRuleError):
        return type(error)(f"{error} (node '{n.name}', {n.op} {plan.target}, input shapes [{describe_inputs(args, kwargs)}])")
    where = f"node '{n.name}' ({n.op} {plan.target}"
    where += f" in module '{plan.module_path}' ({plan.module_class}))" if plan.module_path else ")"
    return NodeExecutionError(
        f"{where} failed on inputs with shapes [{describe_inputs(args, kwargs)}]: {type(error).__name__}: {error}",
        n.name,
    )


def observer_error(n: fx.Node, plan: NodePlan, args: tuple, kwargs: dict, error: Exception) -> CostRuleError:
    """The error for a user-supplied per-node observer (the layer-wise view's custom counters) raising."""
    where = f" in module {plan.module_path!r} ({plan.module_class})" if plan.module_path else ""
    return CostRuleError(
        f"custom counter failed on node '{n.name}' ({n.op} {plan.target}{where}) with "
        f"input shapes [{describe_inputs(args, kwargs)}]: {type(error).__name__}: {error}"
    )


def rule_error(n: fx.Node, plan: NodePlan, args: tuple, kwargs: dict, error: Exception) -> CostRuleError:
    """The error for ``plan``'s rule raising ``error`` on node ``n``."""
    return CostRuleError(
        f"cost rule {plan.rule.name} failed on node '{n.name}' ({n.op} {plan.target}) with input "
        f"shapes [{describe_inputs(args, kwargs)}]: {type(error).__name__}: {error}"
    )


def check_cost(cost: Any, n: fx.Node, plan: NodePlan) -> None:
    """Raise :class:`CostRuleError` unless ``cost``, returned by ``plan``'s rule for node ``n``, is valid."""
    if not valid_cost(cost):
        raise CostRuleError(
            f"cost rule {plan.rule.name} returned {cost!r} for node '{n.name}' ({plan.target}); "
            f"expected a Cost of two non-negative ints"
        )


class AtenRun:
    """A node without a rule that is not a module (a helper function, a method no rule knows): run
    under the aten-level counter, priced by the aten ops it dispatches."""

    def __init__(self, registry: CostRegistry, existing: tuple[torch.Tensor, ...] | None) -> None:
        self.mode = AtenCostMode(registry, existing=existing)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return self.mode

    @property
    def peak_bytes(self) -> int:
        return self.mode.peak_bytes

    def result(self) -> tuple[Cost | None, tuple[Status, tuple[str, ...], tuple[AtenOpCost, ...], tuple]]:
        """``(cost, (status, unsupported ops, aten costs, op records))``; the cost is ``None`` (status
        ``UNSUPPORTED``) when an aten op had no rule."""
        tally = self.mode.tally
        aten = tally.op_costs()
        if tally.unsupported:
            return None, (Status.UNSUPPORTED, tuple(tally.unsupported), aten, ())
        return tally.cost, (Status.FALLBACK, (), aten, ())


class CaptureRun:
    """A leaf module without a rule: every torch-level call it makes is recorded and priced on its own
    (:class:`~torch_flops.op_capture.OpCapture`); with ``existing``, its allocations are followed too."""

    def __init__(
        self, plan: NodePlan, registry: CostRegistry, node_name: str, ignore: Collection[IgnoreSpec],
        probe: Probe | None, existing: tuple[torch.Tensor, ...] | None, claim: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.capture = OpCapture(registry, plan.module, plan.module_qualname or "", node_name, probe, ignore,
                                 measure_bytes=existing is not None, claim=claim)
        self.allocations = AllocationMode(existing) if existing is not None else None

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        with self.capture.modules.hooks(), self.capture:
            with self.allocations if self.allocations is not None else contextlib.nullcontext():
                yield

    @property
    def peak_bytes(self) -> int:
        return self.allocations.allocations.peak_bytes if self.allocations is not None else 0

    def result(self) -> tuple[Cost | None, tuple[Status, tuple[str, ...], tuple[AtenOpCost, ...], tuple]]:
        """``(cost, (status, unsupported ops, (), op records))``: the sum over the calls, ``None`` (status
        ``UNSUPPORTED``) when one of them could not be priced."""
        ops = self.capture.records()
        if self.capture.cost is None:
            return None, (Status.UNSUPPORTED, tuple(self.capture.unsupported), (), ops)
        return self.capture.cost, (Status.FALLBACK, (), (), ops)


def start_fallback(
    plan: NodePlan, registry: CostRegistry, node_name: str, ignore: Collection[IgnoreSpec] = (),
    probe: Probe | None = None, existing: tuple[torch.Tensor, ...] | None = None,
    claim: Callable[[str, Any], None] | None = None,
) -> AtenRun | CaptureRun:
    """How to run a node without a rule: a module op by op (:class:`CaptureRun`), anything else under
    the aten-level counter (:class:`AtenRun`). ``probe`` times the calls inside a module;
    ``existing`` (the tensors alive before the call) follows its allocations and bytes; ``claim`` is
    told each call's record name and output (see :mod:`torch_flops.backward`)."""
    if plan.module is not None:
        return CaptureRun(plan, registry, node_name, ignore, probe, existing, claim)
    return AtenRun(registry, existing)
