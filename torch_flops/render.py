"""Records -> rows, text tables and CSV. The only place where units and separators are added."""

from __future__ import annotations

import csv
import enum
import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from torch_flops.aggregate import has_backward
from torch_flops.arguments import check_choice
from torch_flops.records import LayerRecord, NodeRecord, Shape, Status


class Column(enum.Enum):
    """Columns of the node table: (header, value getter). The order of the enum is the table order."""

    NAME = ("node_name", lambda r: r.name)
    OP = ("node_op", lambda r: r.op)
    TARGET = ("op_target", lambda r: r.target)
    MODULE_PATH = ("module_path", lambda r: r.module_path)
    MODULE_CLASS = ("module_class", lambda r: r.module_class)
    FLOPS = ("flops", lambda r: r.flops)
    TIME_MS = ("time(ms)", lambda r: r.time_ms)
    MEM_BEFORE = ("mem_before_op(B)", lambda r: r.mem_before_bytes)
    MEM_AFTER = ("mem_after_op(B)", lambda r: r.mem_after_bytes)
    MEM_DELTA = ("mem_delta(B)", lambda r: r.mem_delta_bytes)
    STATUS = ("counted_by", lambda r: r.status.value)
    READ_BYTES = ("read(B)", lambda r: r.read_bytes)
    WRITTEN_BYTES = ("written(B)", lambda r: r.written_bytes)
    INTENSITY = ("flops/byte", lambda r: None if r.arithmetic_intensity is None else round(r.arithmetic_intensity, 3))
    LIVE_BYTES = ("live_after(B)", lambda r: r.live_bytes)
    LIVE_PEAK = ("live_peak(B)", lambda r: r.live_peak_bytes)
    MEM_PEAK = ("mem_peak(B)", lambda r: r.mem_peak_bytes)
    MEM_INSIDE = ("mem_inside_op(B)", lambda r: r.mem_inside_bytes)

    def __init__(self, header: str, getter: Callable[[NodeRecord], Any]) -> None:
        self.header = header
        self.getter = getter


ALL_COLUMNS: tuple[Column, ...] = tuple(Column)
DETERMINISTIC_COLUMNS: tuple[Column, ...] = (
    Column.NAME, Column.OP, Column.TARGET, Column.MODULE_PATH, Column.MODULE_CLASS, Column.FLOPS, Column.STATUS,
)
_TEXT_COLUMNS = (Column.NAME, Column.OP, Column.TARGET, Column.MODULE_PATH, Column.MODULE_CLASS, Column.STATUS)


def to_rows(records: Sequence[NodeRecord], columns: Sequence[Column] = ALL_COLUMNS) -> list[list[Any]]:
    """Raw values, one list per record: strings, ``int`` FLOPs (``None`` when unsupported), ``float``
    milliseconds and ``int`` bytes (``None`` when not measured)."""
    return [[column.getter(r) for column in columns] for r in records]


def _cell(column: Column, record: NodeRecord) -> str:
    value = column.getter(record)
    if column is Column.FLOPS:
        if record.status is Status.UNSUPPORTED:
            return "unsupported"
        if record.status is Status.IGNORED:
            return "ignored"
    if value is None:
        return ""
    if column is Column.TIME_MS:
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:+,}" if column is Column.MEM_DELTA else f"{value:,}"
    return str(value)


def to_text(records: Sequence[NodeRecord], columns: Sequence[Column] = ALL_COLUMNS) -> str:
    """A ``tabulate`` table (reStructuredText style) with thousands separators."""
    rows = [[_cell(column, r) for column in columns] for r in records]
    align = ["left" if column in _TEXT_COLUMNS else "right" for column in columns]
    return tabulate(rows, [c.header for c in columns], tablefmt="rst", colalign=align, disable_numparse=True)


def to_csv(records: Sequence[NodeRecord], columns: Sequence[Column] = ALL_COLUMNS) -> str:
    """CSV of the raw values (empty cells for ``None``)."""
    return _table([c.header for c in columns], to_rows(records, columns), "csv", ())


def total_flops_line(total: int, not_counted: Counter[str]) -> str:
    """``total_flops = 8,228,544,512``, followed by what was not counted, if anything."""
    line = f"total_flops = {total:,}"
    n = sum(not_counted.values())
    if n:
        targets = ", ".join(t if c == 1 else f"{t} x{c}" for t, c in not_counted.items())
        line += f" ({n} node{'s' if n != 1 else ''} not counted: {targets})"
    return line


def activation_memory_text(summary: Any) -> str:
    """The analytic activation peak and where it occurs, and on CUDA the allocator's measured peak beside
    it with the difference named: the 512-byte blocks, and what the allocator had inside the op at its
    peak (workspaces, temporaries). ``summary`` is a :class:`torch_flops.engine.MemorySummary`."""
    text = (f"peak_activation_memory = {summary.peak_activation_bytes:,} B (at node {summary.peak_node}); "
            f"parameters {summary.params_bytes:,} B, buffers {summary.buffers_bytes:,} B")
    if summary.measured_peak_bytes is not None:
        blocks = summary.allocator_peak_bytes - summary.peak_activation_bytes
        rest = summary.measured_peak_bytes - summary.allocator_peak_bytes - summary.measured_inside_bytes
        text += (f"\nallocator peak = {summary.measured_peak_bytes:,} B (at node {summary.measured_peak_node}) = "
                 f"analytic {summary.peak_activation_bytes:,} + 512-byte blocks {blocks:,} + inside the op "
                 f"(workspaces, temporaries) {summary.measured_inside_bytes:,} + other {rest:+,}")
    return text


# -- the layer-wise view -------------------------------------------------------------------------------
LAYER_KINDS = ("text", "csv", "md")
LAYER_FORMATS = ("raw", "clever", "ratio")
_UNITS = ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K"))


def clever_format(values: int | float | Sequence[int | float], fmt: str = "%6.2f") -> str | tuple[str, ...]:
    """Numbers as readable strings with K / M / G / T units (powers of 1000), like thop's.

    ``clever_format(1_824_034_280, "%.3f") == "1.824G"``; a list gives a tuple of strings.
    """
    if isinstance(values, (int, float)):
        return _clever(values, fmt)
    return tuple(_clever(v, fmt) for v in values)


def _clever(value: int | float, fmt: str) -> str:
    for scale, unit in _UNITS:
        if abs(value) >= scale:
            return (fmt % (value / scale)) + unit
    return fmt % value


def format_shape(shape: Sequence[int] | None) -> str:
    """A shape without its batch dimension: ``(1, 64, 112, 112)`` -> ``64 x 112 x 112``."""
    if shape is None:
        return ""
    per_sample = tuple(shape[1:])
    return " x ".join(str(d) for d in per_sample) if per_sample else "1"


@dataclass(frozen=True)
class LayerTotal:
    """The closing row of a layer table."""

    module_class: str
    input_shape: Shape | None
    output_shape: Shape | None
    macs: int
    flops: int
    params: int
    backward_flops: int = 0
    backward_macs: int = 0
    recompute_flops: int = 0
    recompute_macs: int = 0


def _layer_numbers(value: int, total: int, fmt: str, kind: str) -> str | int:
    if fmt == "clever":
        return clever_format(value, "%.2f")
    if fmt == "ratio":
        return f"{100.0 * value / total:.2f}" if total else "0.00"
    return value if kind == "csv" else f"{value:,}"


def to_layer_table(
    layers: Sequence[LayerRecord], total: LayerTotal, kind: str = "text", fmt: str = "raw", unit: str = "macs",
    backward: bool = False,
) -> str:
    """Name | Class | Input shape | Output shape | MACs (or FLOPs) | Params, one row per layer and a Total
    row. ``unit``: "macs" (thop's column, :func:`torch_flops.profile`) or "flops". After a backward pass
    (``backward``) the columns of :func:`backward_columns` follow the unit's, in ``fmt`` too (a ratio is
    the percent of that column's total)."""
    if kind not in LAYER_KINDS:
        raise ValueError(f"kind must be one of {LAYER_KINDS}, got {kind!r}")
    if fmt not in LAYER_FORMATS:
        raise ValueError(f"fmt must be one of {LAYER_FORMATS}, got {fmt!r}")
    check_choice("unit", unit, UNITS)
    suffix = " [%]" if fmt == "ratio" else ""
    headers = ["Name", "Class", "Input shape", "Output shape", f"{_unit_label(unit)}{suffix}", f"Params{suffix}"]
    total_cost = total.flops if unit == "flops" else total.macs
    rows = [
        [
            layer.path or "(root)",
            layer.module_class,
            format_shape(layer.input_shape),
            format_shape(layer.output_shape),
            _layer_numbers(layer.flops if unit == "flops" else layer.macs, total_cost, fmt, kind),
            _layer_numbers(layer.params, total.params, fmt, kind),
        ]
        for layer in layers
    ]
    rows.append(
        [
            "Total",
            total.module_class,
            format_shape(total.input_shape),
            format_shape(total.output_shape),
            _layer_numbers(total_cost, total_cost, fmt, kind),
            _layer_numbers(total.params, total.params, fmt, kind),
        ]
    )
    align = ["left"] * 4 + ["right"] * 2
    if backward:
        columns = [(f"{header}{suffix}", lambda row, value=value: _layer_numbers(value(row), value(total), fmt, kind))
                   for header, value in backward_columns([*layers, total], unit, kind)]
        _insert_columns(headers, rows, align, [*layers, total], 5, columns)
    return _table(headers, rows, kind, align)


# -- module and op-type views, exports -----------------------------------------------------------------
VIEW_KINDS = ("text", "md", "csv", "json")
UNITS = ("flops", "macs")
SCHEMA = "torch_flops/result"
SCHEMA_VERSION = 4  # 3: backward, recomputation and backward time in records and rows; total_* after a backward;
# 4: live_peak_bytes, mem_peak_bytes and mem_inside_bytes in node records


def _unit_label(unit: str) -> str:
    return "FLOPs" if unit == "flops" else "MACs"


def _percent(value: int, total: int) -> str:
    return f"{100.0 * value / total:.2f}" if total else "0.00"


def step_total(row: Any, unit: str = "flops") -> int | None:
    """A row's forward + backward + recomputation in ``unit`` (any view's row, or a node record);
    ``None`` when one of them is unknown (no rule, or no backward pass)."""
    values = [getattr(row, unit), getattr(row, f"backward_{unit}"), getattr(row, f"recompute_{unit}")]
    return None if None in values else sum(values)


def step_total_fields(row: Any) -> dict[str, int | None]:
    """``total_flops`` and ``total_macs`` of a row (:func:`step_total`), the fields JSON rows gain after a
    backward pass."""
    return {f"total_{unit}": step_total(row, unit) for unit in UNITS}


def step_totals_line(forward: Any, backward: Any, recompute: Any) -> str:
    """``forward 41,216 FLOPs (20,864 MACs) + backward ... [+ recompute ...] = ...``: the costs of a
    training step's passes (each with ``flops`` and ``macs``) and their sum; the recomputation only when
    there is some (activation checkpointing)."""
    def both(flops: int, macs: int) -> str:
        return f"{flops:,} FLOPs ({macs:,} MACs)"

    parts = [("forward", forward), ("backward", backward)]
    if recompute.flops or recompute.macs:
        parts.append(("recompute", recompute))
    line = " + ".join(f"{name} {both(cost.flops, cost.macs)}" for name, cost in parts)
    return f"{line} = {both(sum(c.flops for _, c in parts), sum(c.macs for _, c in parts))}"


def backward_columns(rows: Sequence[Any], unit: str, kind: str,
                     backward: Callable[[Any], Any] | None = None) -> list[tuple[str, Callable[[Any], Any]]]:
    """The ``(header, value of a row)`` columns a view gains after a backward pass, in ``unit``: Backward,
    Recompute when a row has some, and in CSV the Total (forward + backward + recompute, :func:`step_total`),
    left out of text and Markdown to keep them narrow. ``backward`` reads the backward cell (default: the
    row's ``backward_<unit>``)."""
    label = _unit_label(unit)
    columns = [(f"Backward {label}", backward or (lambda row: getattr(row, f"backward_{unit}")))]
    if any(getattr(row, f"recompute_{unit}") for row in rows):
        columns.append((f"Recompute {label}", lambda row: getattr(row, f"recompute_{unit}")))
    if kind == "csv":
        columns.append((f"Total {label}", lambda row: step_total(row, unit)))
    return columns


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], kind: str, align: Sequence[str]) -> str:
    if kind == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
        return buffer.getvalue()
    shown = [[f"{v:,}" if isinstance(v, int) else (f"{v:.3f}" if isinstance(v, float) else v) for v in row] for row in rows]
    tablefmt = "github" if kind == "md" else "simple"
    return tabulate(shown, list(headers), tablefmt=tablefmt, colalign=list(align), disable_numparse=True)


def module_table(rows: Sequence[Any], total: int, unit: str = "flops", kind: str = "text",
                 throughput: Sequence[Any] | None = None, peaks_known: bool = False, backward: bool = False,
                 backward_time: bool = False, host_time: bool = False) -> str:
    """Module | Class | <unit> (inclusive) | self <unit> | % of total | Params | Time (ms), the inclusive
    columns of :func:`backward_columns` after a backward pass (``backward``), the backward time after a
    timed one (``backward_time``), the host time where the profiler gave one (``host_time``: CUDA), and
    the throughput columns when ``throughput`` is given (:func:`add_throughput_columns`)."""
    check_choice("unit", unit, UNITS)
    check_choice("kind", kind, VIEW_KINDS[:3])
    label = _unit_label(unit)
    headers = ["Module", "Class", label, f"Self {label}", f"% of {label}", "Params", "Time (ms)"]
    table = []
    for row in rows:
        value = row.flops if unit == "flops" else row.macs
        own = row.self_flops if unit == "flops" else row.self_macs
        name = row.path or "(root)"
        table.append([name, row.module_class, value, own, _percent(value, total), row.params, row.time_ms])
    align = ["left", "left"] + ["right"] * 5
    if backward:
        _insert_columns(headers, table, align, rows, 4, backward_columns(rows, unit, kind))
    _add_time_columns(headers, table, align, rows, backward_time, host_time)
    add_throughput_columns(headers, table, align, throughput, peaks_known, kind)
    return _table(headers, table, kind, align)


def _add_time_columns(headers: list[str], table: list[list[Any]], align: list[str], rows: Sequence[Any],
                      backward_time: bool, host_time: bool) -> None:
    """After "Time (ms)": the host time (``host_time``), then the backward time (``backward_time``)."""
    at = headers.index("Time (ms)") + 1
    if backward_time:
        _insert_columns(headers, table, align, rows, at, [("Backward time (ms)", lambda row: row.backward_time_ms)])
    if host_time:
        _insert_columns(headers, table, align, rows, at, [("Host time (ms)", lambda row: row.host_time_ms)])


def _insert_columns(headers: list[str], table: list[list[Any]], align: list[str], rows: Sequence[Any], at: int,
                    columns: Sequence[tuple[str, Callable[[Any], Any]]]) -> None:
    """Insert right-aligned ``(header, value of a row)`` columns at position ``at``, in place."""
    for offset, (header, value) in enumerate(columns):
        headers.insert(at + offset, header)
        align.insert(at + offset, "right")
        for cells, row in zip(table, rows):
            cells.insert(at + offset, value(row))


def op_type_table(rows: Sequence[Any], total: int, unit: str = "flops", kind: str = "text",
                  throughput: Sequence[Any] | None = None, peaks_known: bool = False, backward: bool = False,
                  backward_time: bool = False, host_time: bool = False) -> str:
    """Op type | Count | <unit> | % of total | Time (ms), the columns of :func:`backward_columns` after a
    backward pass (``backward``), the backward time after a timed one (``backward_time``), the host
    time where the profiler gave one (``host_time``), and the throughput columns when given."""
    check_choice("unit", unit, UNITS)
    check_choice("kind", kind, VIEW_KINDS[:3])
    label = _unit_label(unit)
    headers = ["Op type", "Count", label, f"% of {label}", "Time (ms)"]
    table = []
    for row in rows:
        value = row.flops if unit == "flops" else row.macs
        table.append([row.op_type, row.count, value, _percent(value, total), row.time_ms])
    align = ["left"] + ["right"] * 4
    if backward:
        _insert_columns(headers, table, align, rows, 3, backward_columns(rows, unit, kind))
    _add_time_columns(headers, table, align, rows, backward_time, host_time)
    add_throughput_columns(headers, table, align, throughput, peaks_known, kind)
    return _table(headers, table, kind, align)


def node_table(records: Sequence[NodeRecord], unit: str = "flops", kind: str = "text",
               throughput: Sequence[Any] | None = None, peaks_known: bool = False) -> str:
    """The node table of ``print_result_table`` in any kind; ``unit="macs"`` shows MACs; the throughput
    columns when given."""
    check_choice("unit", unit, UNITS)
    check_choice("kind", kind, VIEW_KINDS[:3])
    label = _unit_label(unit)
    headers = ["Node", "Op", "Target", "Module", "Class", label, "Counted by", "Time (ms)"]
    table = []
    for r in records:
        value = r.flops if unit == "flops" else r.macs
        shown = value if r.status is not Status.UNSUPPORTED else ("" if kind == "csv" else "unsupported")
        table.append([r.name, r.op, r.target, r.module_path, r.module_class, shown, r.status.value, r.time_ms])
    align = ["left"] * 5 + ["right", "left", "right"]
    if has_backward(records):
        def backward(r: NodeRecord) -> Any:
            return getattr(r, f"backward_{unit}") if not r.backward_unsupported_ops else ("" if kind == "csv" else "unsupported")

        _insert_columns(headers, table, align, records, 6, backward_columns(records, unit, kind, backward))
    _add_time_columns(headers, table, align, records, any(r.backward_time_ms is not None for r in records),
                      any(r.host_time_ms is not None for r in records))
    add_throughput_columns(headers, table, align, throughput, peaks_known, kind)
    return _table(headers, table, kind, align)


THROUGHPUT_HEADERS = ("TFLOP/s", "GB/s", "FLOP/B")  # not "FLOPs": a MACs table names no FLOPs
PEAK_HEADERS = ("% of peak", "Bound")


def throughput_fields(t: Any, peaks_known: bool) -> dict[str, Any]:
    """A :class:`torch_flops.throughput.Throughput` as raw JSON fields (``{}`` for ``None``):
    ``tflops_per_s``, ``gb_per_s``, ``flops_per_byte`` and, with peaks, ``peak_fraction`` and ``bound``."""
    if t is None:
        return {}
    fields = {"tflops_per_s": t.tflops, "gb_per_s": t.gbps, "flops_per_byte": t.intensity}
    if peaks_known:
        fields |= {"peak_fraction": t.peak_fraction, "bound": t.bound}
    return fields


def add_throughput_columns(
    headers: list[str], table: list[list[Any]], align: list[str], throughput: Sequence[Any] | None, peaks_known: bool,
    kind: str,
) -> None:
    """Append TFLOP/s, GB/s and FLOP/B (arithmetic intensity) (and, with peaks, % of peak and Bound) to ``table`` in place.
    CSV cells are raw values (a fraction of peak in %, as the header says); text and Markdown round
    TFLOP/s to 4 significant digits, GB/s to 1 decimal, FLOP/B to 2, % of peak to 2."""
    if throughput is None:
        return
    extra = [*THROUGHPUT_HEADERS, *(PEAK_HEADERS if peaks_known else ())]
    headers += extra
    align += ["right"] * len(extra)
    for row, t in zip(table, throughput):
        if t is None:
            row += [None] * len(extra)
            continue
        percent = None if t.peak_fraction is None else 100.0 * t.peak_fraction
        cells: list[Any] = [t.tflops, t.gbps, t.intensity, percent, t.bound][: len(extra)]
        if kind != "csv":
            cells = [
                f"{t.tflops:.4g}", f"{t.gbps:.1f}", "" if t.intensity is None else f"{t.intensity:.2f}",
                "" if percent is None else f"{percent:.2f}", t.bound or "",
            ][: len(extra)]
        row += cells


CONVENTIONS = {
    "flop": "one multiply, add, subtract, divide, comparison or transcendental (exp, log, tanh ...), once",
    "mac": "one multiply-accumulate; biases, average pooling, norms and means count one per output",
    "matmul": "out_numel * (2k - 1) FLOPs and out_numel * k MACs for a product over k; + out_numel for a bias",
    "elementwise": "out_numel FLOPs, 0 MACs",
    "attention": "scores, scaling, mask add (also when causal), softmax and attention x V, full score matrix",
    "reference": "docs/conventions.md",
}


def to_json_document(
    view: str, rows: Sequence[Any], *, model: str, inputs: Sequence[Mapping[str, Any]], totals: Mapping[str, Any],
    unit: str, extra: Mapping[str, Any] | None = None, row_fields: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A versioned JSON-ready document: schema, versions, conventions, inputs, totals and the view's rows
    (raw values; shapes as lists). ``row_fields`` adds fields to each row (the throughput columns)."""
    import dataclasses

    import torch

    from torch_flops import __version__

    def plain(row: Any) -> Any:
        value = dataclasses.asdict(row) if dataclasses.is_dataclass(row) else row
        if isinstance(value, dict):
            return {k: (v.value if isinstance(v, Status) else v) for k, v in value.items()}
        return value

    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "torch_flops_version": __version__,
        "torch_version": torch.__version__,
        "conventions": CONVENTIONS,
        "model": model,
        "inputs": list(inputs),
        "unit": unit,
        "totals": dict(totals),
        "view": view,
        "rows": [plain(row) | dict(more) for row, more in zip(rows, row_fields or [{}] * len(rows))],
        **(extra or {}),
    }
