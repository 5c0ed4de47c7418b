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


def unsupported_by_target(records: Sequence[NodeRecord]) -> Counter[str]:
    """How many nodes of each target were not counted, in order of first appearance."""
    return Counter(r.target for r in unsupported(records))


def total_time_ms(records: Sequence[NodeRecord]) -> float:
    """Sum of per-node wall times."""
    return sum(r.time_ms for r in records if r.time_ms is not None)


def max_memory_bytes(records: Sequence[NodeRecord]) -> int | None:
    """The highest memory reading of the run, or ``None`` when memory was not probed (CPU)."""
    readings = [m for r in records for m in (r.mem_before_bytes, r.mem_after_bytes) if m is not None]
    return max(readings) if readings else None


def is_within(path: str, scope: str) -> bool:
    """Whether module ``path`` is ``scope`` or lies inside it ('' is the root, which holds everything)."""
    return scope == "" or path == scope or path.startswith(scope + ".")


@dataclass
class _Layer:
    path: str
    module_class: str
    input_shape: Shape | None = None
    output_shape: Shape | None = None
    macs: int = 0
    flops: int = 0
    unsupported: list[str] = field(default_factory=list)


def _first_call_shapes(records: Sequence[NodeRecord], path: str) -> tuple[Shape | None, Shape | None]:
    """Input of the first node inside ``path``'s scope and output of the last node of that first
    contiguous run: the shapes of the module's first call."""
    inside = False
    first_input: Shape | None = None
    last_output: Shape | None = None
    for record in records:
        if record.op in ("placeholder", "output"):
            within = False
        else:
            within = record.module_path != "" and is_within(record.module_path, path)
        if within:
            if first_input is None and record.input_shapes:  # get_attr nodes have no inputs
                first_input = record.input_shapes[0]
            inside = True
            if record.output_shapes:
                last_output = record.output_shapes[0]
        elif inside:
            break
    return first_input, last_output


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
    the named ``call_module`` nodes (custom rules).
    """
    macs_override = macs_override or {}
    layers: dict[str, _Layer] = {}
    for record in records:
        if record.op in ("placeholder", "output"):
            continue
        layer = layers.get(record.module_path)
        if layer is None:
            module_class = record.module_class if record.module_path else root_class
            layer = layers[record.module_path] = _Layer(record.module_path, module_class)
        macs = macs_override.get(record.name, record.macs)
        layer.macs += macs or 0
        layer.flops += record.flops or 0
        if record.status is Status.UNSUPPORTED:
            layer.unsupported.append(record.target)
    params = {path: 0 for path in layers}
    for owner, count in params_by_path.items():
        rows = [path for path in layers if is_within(owner, path)]
        if rows:
            params[max(rows, key=len)] += count  # all contain `owner`: the longest is the deepest
        elif count:
            params.setdefault("", 0)
            layers.setdefault("", _Layer("", root_class))
            params[""] += count
    result = []
    for path, layer in layers.items():
        input_shape, output_shape = _first_call_shapes(records, path) if path else (None, None)
        result.append(
            LayerRecord(
                path=path,
                module_class=layer.module_class,
                input_shape=input_shape,
                output_shape=output_shape,
                macs=layer.macs,
                flops=layer.flops,
                params=params[path],
                unsupported=tuple(dict.fromkeys(layer.unsupported)),
            )
        )
    return result
