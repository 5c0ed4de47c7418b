"""Typed records: what the runner emits for each FX node.

Records hold raw values only (``int`` FLOPs, ``float`` milliseconds, ``int`` bytes). Units, thousands
separators and percentages are added by :mod:`torch_flops.render`.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

Shape = tuple[int, ...]
T = TypeVar("T")
_new = object.__new__
_set = object.__setattr__


class Status(str, enum.Enum):
    """Which path priced a node.

    - ``RULE``: the node's own cost rule computed the value (which may legitimately be 0, e.g. an empty
      tensor).
    - ``FALLBACK``: the node has no rule; it ran under the aten-level counter and every aten op it
      dispatched was priced (a call that dispatches none, such as a helper returning ``None``, costs 0).
    - ``ZERO``: the op is known to do no arithmetic (views, concatenation, placeholders, ...).
    - ``IGNORED``: the user asked to ignore it (``ignore_ops``); its FLOPs are 0.
    - ``UNSUPPORTED``: an aten op it ran has no rule (named in ``NodeRecord.unsupported_ops``); its FLOPs
      are ``None`` and it is excluded from totals and listed in the summary.
    """

    RULE = "rule"
    FALLBACK = "fallback"
    ZERO = "known-zero"
    IGNORED = "ignored"
    UNSUPPORTED = "unsupported"

    @property
    def counted(self) -> bool:
        """The FLOPs are known (every status but ``UNSUPPORTED``)."""
        return self is not Status.UNSUPPORTED


@dataclass(frozen=True)
class Cost:
    """The cost of one op: FLOPs (every multiply, add, compare, exp ... once) and MACs."""

    flops: int
    macs: int = 0

    def __init__(self, flops: int, macs: int = 0) -> None:
        # one write of the instance dict: a frozen dataclass's own __init__ goes through
        # object.__setattr__ once per field, and a Cost is made for every priced node of every run
        _set(self, "__dict__", {"flops": flops, "macs": macs})

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.macs + other.macs)


ZERO_COST = Cost(0, 0)


@dataclass(frozen=True)
class AtenOpCost:
    """What one aten operator cost, summed over its calls, inside a node counted by the fallback."""

    label: str
    calls: int
    flops: int
    macs: int


@dataclass(frozen=True)
class NodeRecord:
    """One executed op: an FX node, or a torch-level call made inside a leaf node.

    ``read_bytes`` / ``written_bytes`` are the bytes the node moves, ``live_bytes`` the activation
    memory still alive after it and ``live_peak_bytes`` that alive while it runs (see
    :mod:`torch_flops.memory`). ``time_ms`` is the median over the
    timed runs and ``time_min_ms`` the fastest; both are ``None`` in a shape-only or FLOPs-only run. On
    CUDA, where the profiler's records give each kernel's duration (:mod:`torch_flops.device_time`),
    ``time_ms`` is the device time of the kernels the op launched and ``host_time_ms`` the CPU time to
    dispatch them (medians over the timed runs); ``host_time_ms`` is ``None`` elsewhere. ``flops`` and
    ``macs`` are ``None`` exactly when ``status`` is ``UNSUPPORTED``, and then ``unsupported_ops`` names
    the aten ops that had no rule. A record priced by the aten-level fallback lists in ``aten_costs``
    what each aten operator cost (they sum to its cost). ``module_path`` is the qualified
    name of the innermost module whose ``forward`` created the node or made the call ('' at the root),
    and ``module_class`` that module's class name. The ``mem_*`` fields are the CUDA allocator's readings
    (:mod:`torch_flops.measure`), ``None`` unless the node ran on CUDA: ``mem_peak_bytes``, the most
    allocated while it ran above the run's baseline (to set beside ``live_peak_bytes``), and
    ``mem_inside_bytes``, the part of it beyond the node's inputs and outputs (workspaces, temporaries).

    A leaf node (a module run as one unit: one FX cannot trace, or one kept whole) has no record of its
    own: each torch-level call it makes is one (``op`` ``call_function`` or ``call_method``, named
    ``<leaf node>.<call>``), with ``leaf_node`` the leaf node's name ('' for a node of the graph) and
    ``live_bytes`` and ``live_peak_bytes`` ``None``. A leaf that makes no call keeps a record of its own.

    ``backward_flops`` / ``backward_macs``: after ``propagate(..., backward=True)``, what the backward
    pass ran for this op's autograd nodes (``None`` without a backward pass, or when an aten op of its
    backward has no rule: then named in ``backward_unsupported_ops``); see :mod:`torch_flops.backward`.
    ``recompute_flops`` / ``recompute_macs``: the forward that activation checkpointing ran again during
    that backward, charged to this op (not in ``backward_flops``; 0 when nothing was recomputed, ``None``
    without a backward pass or when an op of it has no rule). ``backward_time_ms``: the wall time of this
    op's backward nodes and of the recomputation charged to it (``None`` without a backward pass, with
    ``timing=False`` or shape-only).
    """

    name: str
    op: str
    target: str
    module_path: str
    module_class: str
    status: Status
    flops: int | None
    macs: int | None
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    time_ms: float | None = None
    mem_before_bytes: int | None = None
    mem_after_bytes: int | None = None
    unsupported_ops: tuple[str, ...] = ()
    aten_costs: tuple[AtenOpCost, ...] = ()
    read_bytes: int = 0
    written_bytes: int = 0
    live_bytes: int | None = None
    time_min_ms: float | None = None
    leaf_node: str = ""
    backward_flops: int | None = None
    backward_macs: int | None = None
    backward_unsupported_ops: tuple[str, ...] = ()
    host_time_ms: float | None = None
    backward_time_ms: float | None = None
    recompute_flops: int | None = None
    recompute_macs: int | None = None
    live_peak_bytes: int | None = None
    mem_peak_bytes: int | None = None
    mem_inside_bytes: int | None = None

    @property
    def arithmetic_intensity(self) -> float | None:
        """FLOPs per byte moved, ``flops / (read_bytes + written_bytes)``; ``None`` if either is unknown or 0."""
        moved = self.read_bytes + self.written_bytes
        return self.flops / moved if self.flops is not None and moved else None

    @property
    def mem_delta_bytes(self) -> int | None:
        """``mem_after_bytes - mem_before_bytes``, or ``None`` when memory was not probed."""
        if self.mem_before_bytes is None or self.mem_after_bytes is None:
            return None
        return self.mem_after_bytes - self.mem_before_bytes


_RECORD_DEFAULTS = {f.name: f.default for f in fields(NodeRecord) if f.default is not MISSING}
_RECORD_FIELDS = frozenset(f.name for f in fields(NodeRecord))


def check_record_fields(values: dict[str, Any]) -> None:
    """Raise ``TypeError`` unless ``values`` names every field of :class:`NodeRecord` and nothing else."""
    if len(values) != len(_RECORD_FIELDS) or not values.keys() <= _RECORD_FIELDS:
        missing, unknown = sorted(_RECORD_FIELDS - values.keys()), sorted(values.keys() - _RECORD_FIELDS)
        raise TypeError(f"NodeRecord: missing fields {missing}, unknown fields {unknown}")


def record_template(values: dict[str, Any]) -> dict[str, Any]:
    """:class:`NodeRecord`'s defaults updated with ``values`` (fields only, checked): the start of a
    record's fields, copied and completed before :func:`frozen_from_dict` makes the record."""
    unknown = sorted(values.keys() - _RECORD_FIELDS)
    if unknown:
        raise TypeError(f"NodeRecord: unknown fields {unknown}")
    return {**_RECORD_DEFAULTS, **values}


def frozen_from_dict(cls: type[T], state: dict[str, Any]) -> T:
    """The instance of the frozen dataclass ``cls`` whose fields are ``state``, taken as its ``__dict__``
    (not copied, not checked: ``state`` must name every field and nothing else). ``cls(**state)`` sets
    one field at a time through ``object.__setattr__`` (what ``frozen`` costs): five times as much, paid
    for every node's plan and every node's record of every run."""
    instance = _new(cls)
    _set(instance, "__dict__", state)
    return instance


@dataclass(frozen=True)
class LayerRecord:
    """One row of the layer-wise view: a module and the cost of everything its own ``forward`` ran.

    ``path`` is the module's qualified name ('' for the root). ``input_shape`` / ``output_shape`` are
    those of its first call; ``macs`` is summed over all its calls, ``params`` counted once. The backward
    and recomputation figures (0 without a backward pass) are those of the ops counted on the row.
    """

    path: str
    module_class: str
    input_shape: Shape | None
    output_shape: Shape | None
    macs: int
    flops: int
    params: int
    unsupported: tuple[str, ...] = ()
    backward_flops: int = 0
    backward_macs: int = 0
    recompute_flops: int = 0
    recompute_macs: int = 0
