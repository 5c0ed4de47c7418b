"""Records -> rows, text tables and CSV. The only place where units and separators are added."""

from __future__ import annotations

import csv
import enum
import io
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from tabulate import tabulate

from torch_flops.records import NodeRecord, Status


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

    def __init__(self, header: str, getter: Callable[[NodeRecord], Any]) -> None:
        self.header = header
        self.getter = getter


ALL_COLUMNS: tuple[Column, ...] = tuple(Column)
DETERMINISTIC_COLUMNS: tuple[Column, ...] = (
    Column.NAME, Column.OP, Column.TARGET, Column.MODULE_PATH, Column.MODULE_CLASS, Column.FLOPS,
)
_TEXT_COLUMNS = (Column.NAME, Column.OP, Column.TARGET, Column.MODULE_PATH, Column.MODULE_CLASS)


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
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.header for c in columns])
    writer.writerows(["" if v is None else v for v in row] for row in to_rows(records, columns))
    return buffer.getvalue()


def total_flops_line(total: int, not_counted: Counter[str]) -> str:
    """``total_flops = 8,228,544,512``, followed by what was not counted, if anything."""
    line = f"total_flops = {total:,}"
    n = sum(not_counted.values())
    if n:
        targets = ", ".join(t if c == 1 else f"{t} x{c}" for t, c in not_counted.items())
        line += f" ({n} node{'s' if n != 1 else ''} not counted: {targets})"
    return line
