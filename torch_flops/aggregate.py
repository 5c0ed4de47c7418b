"""Pure functions over node records: totals and the list of what was not counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch_flops.records import AtenOpCost, LayerRecord, NodeRecord, Shape, Status


def total(records: Sequence[NodeRecord], field: str) -> Any:
    """Sum of one numeric field of the records over those that have it (``backward_flops``,
    ``recompute_macs``, ``backward_time_ms`` ...; a value is ``None`` when not measured or not counted,
    and the sum of none is 0)."""
    return sum(value for r in records if (value := getattr(r, field)) is not None)


def total_flops(records: Sequence[NodeRecord]) -> int:
    """Sum of FLOPs over counted, known-zero and ignored nodes (unsupported nodes have none)."""
    return total(records, "flops")


def total_macs(records: Sequence[NodeRecord]) -> int:
    return total(records, "macs")


def has_backward(records: Sequence[NodeRecord]) -> bool:
    """Whether the records come from ``propagate(..., backward=True)`` (a backward FLOPs value, or the
    aten ops of a backward that no rule priced)."""
    return any(r.backward_flops is not None or r.backward_unsupported_ops for r in records)


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
    """Sum of per-node times."""
    return total(records, "time_ms")


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
    backward_flops: int = 0
    backward_macs: int = 0
    recompute_flops: int = 0
    recompute_macs: int = 0


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


@dataclass(frozen=True)
class Charge:
    """One op's cost charged to a module: the module whose own ``forward`` ran it. ``op_type`` is the
    op-type row it is charged to (:func:`charged_op_type`; ``None`` for a ``get_attr``, which has none)
    and ``aten_costs`` the aten ops a node the fallback counted ran, which that view lists apart."""

    path: str
    module_class: str
    flops: int
    macs: int
    time_ms: float
    unsupported: str | None  # the op's label when no rule priced it
    backward_flops: int = 0
    moved_bytes: int = 0  # read + written
    backward_time_ms: float = 0.0
    recompute_flops: int = 0
    backward_macs: int = 0
    recompute_macs: int = 0
    op_type: str | None = None
    aten_costs: tuple[AtenOpCost, ...] = ()
    host_time_ms: float = 0.0


def _within(path: str, scope: str) -> bool:
    return scope == "" or path == scope or path.startswith(scope + ".")


def charges(records: Sequence[NodeRecord], root_class: str, whole: Collection[str] = ()) -> list[Charge]:
    """The one attribution of records to modules, read by every module-level view.

    Each op record (not a graph input or output) is charged to its ``module_path``: a ``call_module``
    node to its module, a function, a method or a call made inside a leaf to the innermost module whose
    ``forward`` ran it. The records inside a module named in ``whole`` (a module with a custom counter)
    are charged to that module itself."""
    found = []
    for r in records:
        if r.op in ("placeholder", "output"):
            continue
        path, cls = r.module_path, r.module_class if r.module_path else root_class
        scope = next((p for p in whole if _within(path, p)), None)
        if scope is not None and scope != path:
            path, cls = scope, ""
        unsupported = unsupported_label(r) if r.status is Status.UNSUPPORTED and scope is None else None
        found.append(Charge(path, cls, r.flops or 0, r.macs or 0, r.time_ms or 0.0, unsupported, r.backward_flops or 0,
                            r.read_bytes + r.written_bytes, r.backward_time_ms or 0.0, r.recompute_flops or 0,
                            r.backward_macs or 0, r.recompute_macs or 0,
                            None if r.op == "get_attr" else charged_op_type(r), r.aten_costs, r.host_time_ms or 0.0))
    return found


def by_layer(
    records: Sequence[NodeRecord],
    root_class: str,
    params_by_path: Mapping[str, int],
    macs_override: Mapping[str, int] | None = None,
) -> list[LayerRecord]:
    """Group node costs by the module whose own ``forward`` ran them, in order of first call.

    Records are charged to modules by :func:`charges`. ``params_by_path`` gives each parameter-owning path's
    count; a parameter is charged to the deepest layer row that contains it (the root row takes what no
    other row contains), so the rows' params sum to the model's. ``macs_override`` replaces the MACs of
    the modules at the named paths and everything inside them (custom counters); their ops are not
    reported as unsupported.
    """
    macs_override = macs_override or {}
    layers: dict[str, _Layer] = {}
    for charge in charges(records, root_class, macs_override):
        layer = layers.get(charge.path)
        if layer is None:
            layer = layers[charge.path] = _Layer(charge.path, charge.module_class)
        layer.macs += charge.macs if charge.path not in macs_override else 0
        layer.flops += charge.flops
        layer.backward_flops += charge.backward_flops
        layer.backward_macs += charge.backward_macs
        layer.recompute_flops += charge.recompute_flops
        layer.recompute_macs += charge.recompute_macs
        if charge.unsupported is not None:
            layer.unsupported.append(charge.unsupported)
    for path, macs in macs_override.items():
        layer = layers.get(path)
        if layer is None:
            layer = layers[path] = _Layer(path, "")
        layer.macs += macs
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
            backward_flops=layer.backward_flops,
            backward_macs=layer.backward_macs,
            recompute_flops=layer.recompute_flops,
            recompute_macs=layer.recompute_macs,
        )
        for layer in layers.values()
    ]


# -- module hierarchy and op types ---------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleRow:
    """One module of the hierarchy view.

    ``flops`` / ``macs`` / ``time_ms`` / ``params`` are inclusive (the module and everything inside it);
    ``self_flops`` / ``self_macs`` are the ops its own ``forward`` ran, plus, for a row at the depth
    limit, everything below it. So at any depth the ``self_*`` column sums to the total. The backward
    fields, inclusive too, are 0 without a backward pass.
    """

    path: str
    module_class: str
    depth: int
    flops: int
    self_flops: int
    macs: int
    self_macs: int
    params: int
    time_ms: float
    backward_flops: int = 0  # inclusive, after propagate(..., backward=True)
    backward_time_ms: float = 0.0  # inclusive, after a timed backward
    recompute_flops: int = 0  # inclusive: activation checkpointing's recomputation in the backward
    backward_macs: int = 0
    recompute_macs: int = 0
    host_time_ms: float = 0.0  # inclusive, on CUDA (the CPU time to dispatch; time_ms is the device's)


@dataclass(frozen=True)
class OpTypeRow:
    """One op type (``nn.Conv2d``, ``operator.add``, ``aten.mm`` ...) of the op-type view. The backward
    fields (0 without a backward pass) are those of the nodes of this type: a node the fallback counted
    books its backward, like its time, on its first aten op."""

    op_type: str
    count: int
    flops: int
    macs: int
    time_ms: float
    backward_flops: int = 0
    backward_macs: int = 0
    recompute_flops: int = 0
    recompute_macs: int = 0
    backward_time_ms: float = 0.0
    host_time_ms: float = 0.0


@dataclass
class _Sums:
    """Running sums of charges: a module's inclusive figures, an op type's."""

    flops: int = 0
    macs: int = 0
    time_ms: float = 0.0
    host_time_ms: float = 0.0
    backward_flops: int = 0
    backward_macs: int = 0
    backward_time_ms: float = 0.0
    recompute_flops: int = 0
    recompute_macs: int = 0

    def add_cost(self, flops: int, macs: int) -> None:
        self.flops += flops
        self.macs += macs

    def add_rest(self, charge: Charge) -> None:
        """Everything of ``charge`` but its forward cost: times, backward, recomputation."""
        self.time_ms += charge.time_ms
        self.host_time_ms += charge.host_time_ms
        self.backward_flops += charge.backward_flops
        self.backward_macs += charge.backward_macs
        self.backward_time_ms += charge.backward_time_ms
        self.recompute_flops += charge.recompute_flops
        self.recompute_macs += charge.recompute_macs

    def rest(self) -> dict[str, Any]:
        """The fields :meth:`add_rest` sums, by name (as the row dataclasses name them)."""
        return {"host_time_ms": self.host_time_ms, "backward_flops": self.backward_flops,
                "backward_macs": self.backward_macs, "backward_time_ms": self.backward_time_ms,
                "recompute_flops": self.recompute_flops, "recompute_macs": self.recompute_macs}


def _depth(path: str) -> int:
    return 0 if not path else path.count(".") + 1


def by_module(
    records: Sequence[NodeRecord],
    root_class: str,
    params_by_path: Mapping[str, int] | None = None,
    depth: int | None = None,
    module_classes: Mapping[str, str] | None = None,
) -> list[ModuleRow]:
    """The module tree, depth first, siblings in order of first call, to ``depth`` levels below the
    root (``None``: all). Functional ops roll up into the module whose ``forward`` ran them; parameters
    count in every module that contains them. ``module_classes`` names the classes of modules that ran
    no op of their own (containers). See :class:`ModuleRow`."""
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    classes: dict[str, str] = {**(module_classes or {}), "": root_class}
    inclusive: dict[str, _Sums] = {"": _Sums()}
    own: dict[str, list[int]] = {}
    first: dict[str, int] = {"": 0}
    for i, charge in enumerate(charges(records, root_class)):
        path = charge.path
        if path not in classes and charge.module_class:
            classes[path] = charge.module_class
        for scope in _scopes(path):
            first.setdefault(scope, i + 1)
        own.setdefault(path, [0, 0])
        own[path][0] += charge.flops
        own[path][1] += charge.macs
        for scope in [*_scopes(path), ""]:
            totals = inclusive.get(scope)
            if totals is None:
                totals = inclusive[scope] = _Sums()
            totals.add_cost(charge.flops, charge.macs)
            totals.add_rest(charge)
    params_inclusive: dict[str, int] = {}
    for owner, count in (params_by_path or {}).items():
        for scope in [*_scopes(owner), ""]:
            params_inclusive[scope] = params_inclusive.get(scope, 0) + count
    rows = []
    for path, sums in inclusive.items():
        level = _depth(path)
        if depth is not None and level > depth:
            continue
        at_limit = depth is not None and level == depth
        self_flops, self_macs = (sums.flops, sums.macs) if at_limit else tuple(own.get(path, (0, 0)))
        rows.append(ModuleRow(path, classes.get(path, ""), level, sums.flops, self_flops, sums.macs, self_macs,
                              params_inclusive.get(path, 0), sums.time_ms, **sums.rest()))
    return sorted(rows, key=lambda row: [first[p] for p in reversed(_scopes(row.path))])


def op_type(record: NodeRecord) -> str:
    """``nn.Conv2d`` for a torch.nn module node, ``MyBlock`` for another module, the function's name
    (``operator.add``, ``torch.matmul``), ``Tensor.<name>`` for a method."""
    if record.op == "call_module":
        cls = record.module_class
        return f"nn.{cls}" if cls in _TORCH_NN_CLASSES else cls
    if record.op == "call_method":
        return f"Tensor.{record.target}"
    return record.target


_TORCH_NN_CLASSES = frozenset(name for name in dir(__import__("torch").nn) if name[:1].isupper())


def charged_op_type(record: NodeRecord) -> str:
    """The op-type row that a node's time (and bytes) are charged to: the first aten op of a node the
    fallback counted, the unsupported target of a node not counted, else the node's op type."""
    if record.aten_costs:
        return record.aten_costs[0].label
    if record.status is Status.UNSUPPORTED:
        return unsupported_label(record)
    return op_type(record)


def by_op_type(records: Sequence[NodeRecord]) -> list[OpTypeRow]:
    """FLOPs, MACs, node count, time and the backward's figures per op type, in order of first appearance,
    read from :func:`charges`. A node counted by the aten fallback is split into the aten ops it ran
    (``aten.mm`` ...), each counted once per call; its time and backward go to the first."""
    table: dict[str, _Sums] = {}
    counts: dict[str, int] = {}

    def add(key: str, count: int, flops: int, macs: int, charge: Charge | None = None) -> None:
        sums = table.get(key)
        if sums is None:
            sums = table[key] = _Sums()
        counts[key] = counts.get(key, 0) + count
        sums.add_cost(flops, macs)
        if charge is not None:
            sums.add_rest(charge)

    for charge in charges(records, ""):
        if charge.op_type is None:
            continue
        if charge.aten_costs:
            for i, cost in enumerate(charge.aten_costs):
                add(cost.label, cost.calls, cost.flops, cost.macs, charge if i == 0 else None)
        else:
            add(charge.op_type, 1, charge.flops, charge.macs, charge)
    return [OpTypeRow(key, counts[key], sums.flops, sums.macs, sums.time_ms, **sums.rest()) for key, sums in table.items()]


def sort_rows(rows: list, key: str, top: int | None = None) -> list:
    """Rows sorted by a numeric field, largest first (``key="path"`` / ``"op_type"`` keeps their order),
    then the first ``top``. Rows without a value (an unsupported node's FLOPs, a time not measured)
    come last; ties keep their order."""
    if key not in ("path", "op_type", "order"):
        if not rows or not hasattr(rows[0], key):
            fields = ", ".join(f for f in getattr(rows[0], "__dataclass_fields__", {})) if rows else ""
            raise ValueError(f"cannot sort by {key!r}; sort by one of: {fields}")
        rows = sorted(rows, key=lambda row: _present_first(getattr(row, key)), reverse=True)
    if top is not None:
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        rows = rows[:top]
    return rows


def _present_first(value: Any) -> tuple[bool, Any]:
    """A sort key under which ``None`` is below every value (largest-first sorts put it last)."""
    return (value is not None, 0 if value is None else value)
