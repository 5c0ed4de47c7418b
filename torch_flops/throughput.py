"""Achieved throughput against the device: pure functions over records, their times and the peaks.

For work of ``flops`` FLOPs moving ``moved_bytes`` bytes (read + written, :class:`NodeRecord`'s
``read_bytes + written_bytes``) in ``time_ms`` milliseconds, on a device of peak ``P`` TFLOP/s (dense,
for the run's dtype) and ``B`` GB/s:

- achieved TFLOP/s = ``flops / (time_ms * 1e-3) / 1e12 = flops / (time_ms * 1e9)``
- achieved GB/s = ``moved_bytes / (time_ms * 1e-3) / 1e9 = moved_bytes / (time_ms * 1e6)``
- arithmetic intensity = ``flops / moved_bytes`` FLOPs per byte (``None`` when nothing moved)
- share of peak = ``achieved TFLOP/s / P`` (a fraction; renderers show it in %)
- ridge point = ``P * 1e12 / (B * 1e9) = 1000 * P / B`` FLOPs per byte; a node whose intensity is at
  least the ridge is ``"compute"``-bound, below it ``"memory"``-bound (the roofline model)
- MFU of the whole forward = total FLOPs / total time / ``P``: the share of peak of the sum over nodes.

Worked example: 2e9 FLOPs moving 4e6 bytes in 1 ms: 2 TFLOP/s, 4 GB/s, intensity 500; against
P = 10 TFLOP/s and B = 100 GB/s, 20 % of peak, ridge 100, compute-bound.

Times are the records' ``time_ms`` (per-node medians with ``repeat``); a record without a time (a
FLOPs-only or shape-only run) or with a time of 0 gets no throughput. A node counted by the aten
fallback has its bytes and time under its first aten op in the op-type view, as its time already is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from torch_flops import aggregate
from torch_flops.peaks import UNKNOWN_DEVICE_HINT, Peaks, detect, run_dtype_key
from torch_flops.records import NodeRecord


@dataclass(frozen=True)
class Throughput:
    """Raw throughput of one row: TFLOP/s, GB/s, FLOPs per byte, the fraction of peak and the bound
    (``None`` where the peaks, or the bytes, are not known)."""

    flops: int
    moved_bytes: int
    time_ms: float
    tflops: float
    gbps: float
    intensity: float | None
    peak_fraction: float | None
    bound: str | None


def ridge_point(peak_tflops: float, peak_gbps: float) -> float:
    """FLOPs per byte at which the two ceilings meet: ``1000 * peak_tflops / peak_gbps``."""
    return 1000.0 * peak_tflops / peak_gbps


def throughput(
    flops: int | None, moved_bytes: int, time_ms: float | None, peak_tflops: float | None = None,
    peak_gbps: float | None = None,
) -> Throughput | None:
    """The formulas of the module docstring for one row; ``None`` without a positive time."""
    if time_ms is None or time_ms <= 0:
        return None
    flops = flops or 0
    tflops = flops / (time_ms * 1e9)
    gbps = moved_bytes / (time_ms * 1e6)
    intensity = flops / moved_bytes if moved_bytes else None
    fraction = tflops / peak_tflops if peak_tflops else None
    bound = None
    if peak_tflops and peak_gbps and intensity is not None:
        bound = "compute" if intensity >= ridge_point(peak_tflops, peak_gbps) else "memory"
    return Throughput(flops, moved_bytes, time_ms, tflops, gbps, intensity, fraction, bound)


def _moved(record: NodeRecord) -> int:
    return record.read_bytes + record.written_bytes


def for_nodes(records: Sequence[NodeRecord], peak_tflops: float | None = None, peak_gbps: float | None = None) -> list[Throughput | None]:
    """One :class:`Throughput` (or ``None``) per record."""
    return [throughput(r.flops, _moved(r), r.time_ms, peak_tflops, peak_gbps) for r in records]


def bytes_by_module(records: Sequence[NodeRecord]) -> dict[str, int]:
    """Bytes moved by each module and everything inside it ('' for the whole model): each record's bytes
    count in the module it is charged to (:func:`torch_flops.aggregate.charges`) and every module around it."""
    moved: dict[str, int] = {}
    for charge in aggregate.charges(records, ""):
        for scope in [*aggregate._scopes(charge.path), ""]:
            moved[scope] = moved.get(scope, 0) + charge.moved_bytes
    return moved


def for_modules(rows: Sequence[aggregate.ModuleRow], records: Sequence[NodeRecord], peak_tflops: float | None = None,
                peak_gbps: float | None = None) -> list[Throughput | None]:
    """One :class:`Throughput` per module row (inclusive FLOPs, bytes and time)."""
    moved = bytes_by_module(records)
    return [throughput(row.flops, moved.get(row.path, 0), row.time_ms or None, peak_tflops, peak_gbps) for row in rows]


def bytes_by_op_type(records: Sequence[NodeRecord]) -> dict[str, int]:
    """Bytes moved per op type, keyed as :func:`torch_flops.aggregate.by_op_type` keys its rows."""
    moved: dict[str, int] = {}
    for r in records:
        if r.op in ("placeholder", "output", "get_attr"):
            continue
        key = aggregate.charged_op_type(r)
        moved[key] = moved.get(key, 0) + _moved(r)
    return moved


def for_op_types(rows: Sequence[aggregate.OpTypeRow], records: Sequence[NodeRecord], peak_tflops: float | None = None,
                 peak_gbps: float | None = None) -> list[Throughput | None]:
    """One :class:`Throughput` per op-type row."""
    moved = bytes_by_op_type(records)
    return [throughput(row.flops, moved.get(row.op_type, 0), row.time_ms or None, peak_tflops, peak_gbps) for row in rows]


@dataclass(frozen=True)
class Summary:
    """The whole forward against the device: total FLOPs, bytes and time (the sum of per-node times),
    achieved TFLOP/s and GB/s, the dtype key and peaks used, and MFU (``None`` without a peak for the
    run's dtype; ``message`` then says why and how to pass one)."""

    flops: int
    moved_bytes: int
    time_ms: float | None
    tflops: float | None
    gbps: float | None
    dtype_key: str | None
    peaks: Peaks | None
    peak_tflops: float | None
    peak_gbps: float | None
    mfu: float | None
    message: str | None


def resolve_peaks(user: Peaks | None, device: torch.device | None) -> tuple[Peaks | None, str | None]:
    """The user's peaks when given; else the table's for a CUDA device (:func:`torch_flops.peaks.detect`);
    else ``None`` and a message saying how to pass them (never a guessed default)."""
    if user is not None:
        return user, None
    found = detect(device) if device is not None and device.type == "cuda" else None
    if found is not None:
        return found, None
    if device is not None and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return None, f"{name} is not in the table of peaks (docs/peaks.md); {UNKNOWN_DEVICE_HINT}"
    return None, UNKNOWN_DEVICE_HINT


def summary(records: Sequence[NodeRecord], peaks: Peaks | None, dtype_key: str | None, message: str | None = None) -> Summary:
    """Totals of the run and MFU = total FLOPs / total time / peak TFLOP/s for ``dtype_key``."""
    flops = aggregate.total_flops(records)
    moved = sum(_moved(r) for r in records if r.op not in ("placeholder", "output"))
    timed = any(r.time_ms is not None for r in records)
    time_ms = aggregate.total_time_ms(records) if timed else None
    peak = peaks.tflops_for(dtype_key) if peaks is not None else None
    peak_gbps = peaks.bandwidth_gbps if peaks is not None else None
    row = throughput(flops, moved, time_ms, peak, peak_gbps)
    if peaks is not None and peak is None:
        message = f"no % of peak: the peaks of {peaks.name} give no figure for {dtype_key}; pass peak_tflops={{'{dtype_key}': ...}}"
    return Summary(
        flops, moved, time_ms, row.tflops if row else None, row.gbps if row else None, dtype_key, peaks, peak, peak_gbps,
        row.peak_fraction if row else None, message,
    )


def dtype_key_of_run(model: torch.nn.Module, input_dtypes: Sequence[torch.dtype], device: torch.device | None) -> str | None:
    """The dtype key of a run: the model's first floating parameter or buffer dtype, else its inputs'."""
    state = [t.dtype for t in (*model.parameters(), *model.buffers())]
    return run_dtype_key([*state, *input_dtypes], device)


def for_view(view: str, rows: Sequence, records: Sequence[NodeRecord], run: Summary) -> list[Throughput | None] | None:
    """The throughput of each row of a view (``"nodes"``, ``"modules"``, ``"ops"``), against the run's
    peaks; ``None`` when the run has no times (no columns then) or the view has no throughput (layers)."""
    if run.time_ms is None or view not in ("nodes", "modules", "ops"):
        return None
    peak, gbps = run.peak_tflops, run.peak_gbps
    if view == "nodes":
        return for_nodes(rows, peak, gbps)
    if view == "modules":
        return for_modules(rows, records, peak, gbps)
    return for_op_types(rows, records, peak, gbps)


def summary_fields(run: Summary) -> dict:
    """The summary as raw JSON fields."""
    return {
        "flops": run.flops, "moved_bytes": run.moved_bytes, "time_ms": run.time_ms, "tflops_per_s": run.tflops,
        "gb_per_s": run.gbps, "dtype": run.dtype_key, "device": run.peaks.name if run.peaks else None,
        "peak_tflops": run.peak_tflops, "peak_gb_per_s": run.peak_gbps, "mfu": run.mfu, "message": run.message,
    }
