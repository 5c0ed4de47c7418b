"""Pure functions over node records: totals and the list of what was not counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from torch_flops.records import NodeRecord, Status


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
