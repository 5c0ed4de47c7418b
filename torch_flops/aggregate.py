"""Pure functions over node records: totals and the list of what was not counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch_flops.records import LayerRecord, NodeRecord, Shape, Status


def total_flops(records: Sequence[NodeRecord]) -> int:
    """Sum of FLOPs over counted, known-zero and ignored nodes (unsupported nodes have none)."""
    return sum(r.flops for r in records if r.flops is not None)


def total_macs(records: Sequence[NodeRecord]) -> int:
    return sum(r.macs for r in records if r.macs is not None)


def unsupported(records: Sequence[NodeRecord]) -> list[NodeRecord]:
    return [r for r in records if r.status is Status.UNSUPPORTED]


def unsupported_label(record: NodeRecord) -> str:
    """The target, followed by the aten ops that lacked a rule: ``my_op [aten.foo]``."""
    return f"{record.target} [{', '.join(record.unsupported_ops)}]" if record.unsupported_ops else record.target


def unsupported_by_target(records: Sequence[NodeRecord]) -> Counter[str]:
    """How many nodes of each target were not counted (see :func:`unsupported_label`), in order of
    first appearance."""
    return Counter(unsupported_label(r) for r in unsupported(records))


def by_status(records: Sequence[NodeRecord]) -> Counter[Status]:
    """How many nodes each path priced (rule, fallback, known-zero, ignored, unsupported)."""
    return Counter(r.status for r in records)


def total_time_ms(records: Sequence[NodeRecord]) -> float:
    """Sum of per-node wall times."""
    return sum(r.time_ms for r in records if r.time_ms is not None)


def max_memory_bytes(records: Sequence[NodeRecord]) -> int | None:
    """The highest memory reading of the run, or ``None`` when memory was not probed (CPU)."""
    readings = [m for r in records for m in (r.mem_before_bytes, r.mem_after_bytes) if m is not None]
    return max(readings) if readings else None


@dataclass
class _Layer:
    path: str
    module_class: str
    input_shape: Shape | None = None
    output_shape: Shape | None = None
    macs: int = 0
    flops: int = 0
    params: int = 0
    unsupported: list[str] = field(default_factory=list)


def _scopes(path: str) -> list[str]:
    """``'a.b.c'`` -> ``['a.b.c', 'a.b', 'a']``: the module and its ancestors, innermost first."""
    parts = path.split(".") if path else []
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _fill_first_call_shapes(records: Sequence[NodeRecord], layers: dict[str, _Layer]) -> None:
    """Each layer's shapes of its first call: the first tensor input inside its scope and the output of
    the last node of that first contiguous run of nodes."""
    active: set[str] = set()
    done: set[str] = set()
    for record in records:
        if record.op in ("placeholder", "output"):
            scopes: set[str] = set()
        else:
            scopes = {p for p in _scopes(record.module_path) if p in layers and p not in done}
        done |= active - scopes
        active = scopes
        for path in scopes:
            layer = layers[path]
            if layer.input_shape is None and record.input_shapes:  # get_attr nodes have no inputs
                layer.input_shape = record.input_shapes[0]
            if record.output_shapes:
                layer.output_shape = record.output_shapes[0]


def _add_module_costs(record: NodeRecord, layers: dict[str, _Layer], root_class: str) -> None:
    """A leaf node counted by the fallback: each module inside it gets its own cost and shapes."""
    for cost in record.module_costs:
        layer = layers.get(cost.path)
        if layer is None:
            layer = layers[cost.path] = _Layer(cost.path, cost.module_class if cost.path else root_class)
            layer.input_shape, layer.output_shape = cost.input_shape, cost.output_shape
        layer.macs += cost.macs
        layer.flops += cost.flops


def by_layer(
    records: Sequence[NodeRecord],
    root_class: str,
    params_by_path: Mapping[str, int],
    macs_override: Mapping[str, int] | None = None,
) -> list[LayerRecord]:
    """Group node costs by the module whose own ``forward`` ran them, in order of first call.

    Every node is attributed to its ``module_path`` (a ``call_module`` node to its module, a function
    or method to the innermost module around it). ``params_by_path`` gives each parameter-owning path's
    count; a parameter is charged to the deepest layer row that contains it (the root row takes what no
    other row contains), so the rows' params sum to the model's. ``macs_override`` replaces the MACs of
    the named ``call_module`` nodes (custom counters); such nodes are not reported as unsupported.
    """
    macs_override = macs_override or {}
    layers: dict[str, _Layer] = {}
    for record in records:
        if record.op in ("placeholder", "output"):
            continue
        if record.module_costs and record.name not in macs_override:
            _add_module_costs(record, layers, root_class)
            continue
        layer = layers.get(record.module_path)
        if layer is None:
            module_class = record.module_class if record.module_path else root_class
            layer = layers[record.module_path] = _Layer(record.module_path, module_class)
        overridden = record.name in macs_override
        layer.macs += macs_override[record.name] if overridden else (record.macs or 0)
        layer.flops += record.flops or 0
        if record.status is Status.UNSUPPORTED and not overridden:
            layer.unsupported.append(unsupported_label(record))
    for owner, count in params_by_path.items():
        if not count:
            continue
        path = next((p for p in _scopes(owner) if p in layers), "")
        if path not in layers:
            layers[path] = _Layer(path, root_class)
        layers[path].params += count
    _fill_first_call_shapes(records, layers)
    return [
        LayerRecord(
            path=layer.path,
            module_class=layer.module_class,
            input_shape=layer.input_shape,
            output_shape=layer.output_shape,
            macs=layer.macs,
            flops=layer.flops,
            params=layer.params,
            unsupported=tuple(dict.fromkeys(layer.unsupported)),
        )
        for layer in layers.values()
    ]
