"""After ``propagate(..., backward=True)`` every view (nodes, modules, op types, layers) shows the backward
and, where there is any, the recomputation, in FLOPs or MACs by ``unit``; CSV and JSON rows add the
forward + backward + recompute total; forward-only reports are unchanged."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from torch_flops import TorchFLOPsByFX, cli, profile, render

torch.manual_seed(0)

# Sequential(Linear(64, 32), ReLU(), Linear(32, 16)) on (8, 64) that needs no gradient; docs/conventions.md
FORWARD = {
    "flops": {"0": 8 * 32 * (2 * 64 - 1) + 8 * 32,  # 32,768: the product and the bias
              "1": 8 * 32,  # 256
              "2": 8 * 16 * (2 * 32 - 1) + 8 * 16},  # 8,192
    "macs": {"0": 8 * 32 * 64 + 8 * 32,  # 16,640: a bias counts one per output
             "1": 0,
             "2": 8 * 16 * 32 + 8 * 16},  # 4,224
}
BACKWARD = {
    "flops": {"0": 32 * 64 * (2 * 8 - 1) + 32 * (8 - 1),  # grad weight 30,720 + grad bias 224; no grad input
              "1": 8 * 32,  # threshold_backward: 256
              "2": 8 * 32 * (2 * 16 - 1) + 16 * 32 * (2 * 8 - 1) + 16 * (8 - 1)},  # 7,936 + 7,680 + 112 = 15,728
    "macs": {"0": 32 * 64 * 8,  # 16,384: the bias's sum is adds only
             "1": 0,
             "2": 8 * 32 * 16 + 16 * 32 * 8},  # 8,192
}
UNITS = ("flops", "macs")


def chain() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))


@pytest.fixture(scope="module")
def counter() -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(chain())
    counter.propagate(torch.randn(8, 64), backward=True)
    return counter


@pytest.fixture(scope="module")
def forward_only() -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(chain())
    counter.propagate(torch.randn(8, 64))
    return counter


def csv_columns(text: str, key: int, *headers: str) -> dict[str, tuple[int, ...]]:
    """``{row[key]: (row[header] ...)}`` of a CSV report, numbers as ints."""
    rows = list(csv.reader(io.StringIO(text)))
    at = [rows[0].index(header) for header in headers]
    return {row[key]: tuple(int(row[i]) for i in at) for row in rows[1:] if row and row[key]}


def whole(table: dict[str, dict[str, int]]) -> tuple[int, int]:
    """The model's FLOPs and MACs in ``table`` (:data:`FORWARD` or :data:`BACKWARD`)."""
    return sum(table["flops"].values()), sum(table["macs"].values())


def per_layer(unit: str) -> dict[str, tuple[int, int, int]]:
    """Forward, backward and their sum per layer of the chain."""
    f, b = FORWARD[unit], BACKWARD[unit]
    return {name: (f[name], b[name], f[name] + b[name]) for name in f}


@pytest.mark.parametrize("unit", UNITS)
def test_every_view_s_csv_has_the_backward_and_the_total_by_unit(counter: TorchFLOPsByFX, unit: str) -> None:
    label = "FLOPs" if unit == "flops" else "MACs"
    headers = (label, f"Backward {label}", f"Total {label}")
    expected = per_layer(unit)
    model = tuple(sum(values) for values in zip(*expected.values()))
    nodes = csv_columns(counter.report("nodes", "csv", unit=unit), 3, *headers)  # keyed by the module column
    assert nodes == expected
    modules = csv_columns(counter.report("modules", "csv", unit=unit), 0, *headers)
    assert modules == {**expected, "(root)": model}
    layers = csv_columns(counter.report("layers", "csv", unit=unit), 0, *headers)
    assert layers == {**expected, "Total": model}  # rows and the Total row
    ops = csv_columns(counter.report("ops", "csv", unit=unit), 0, *headers)
    linear = tuple(a + b for a, b in zip(expected["0"], expected["2"]))
    assert ops == {"nn.Linear": linear, "nn.ReLU": expected["1"]}


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("view", ["nodes", "modules", "ops", "layers"])
def test_text_and_markdown_show_the_backward_in_the_unit_without_a_total_column(
        counter: TorchFLOPsByFX, view: str, unit: str) -> None:
    label, other = ("FLOPs", "MACs") if unit == "flops" else ("MACs", "FLOPs")
    for kind in ("text", "md"):
        header = counter.report(view, kind, unit=unit).splitlines()[0]
        assert f"Backward {label}" in header and f"Backward {other}" not in header
        assert "Total" not in header and "Recompute" not in header  # nothing was recomputed


@pytest.mark.parametrize("view", ["nodes", "modules", "ops", "layers"])
def test_forward_only_reports_have_no_backward_columns_or_fields(forward_only: TorchFLOPsByFX, view: str) -> None:
    for unit in UNITS:
        for kind in ("text", "md", "csv"):
            header = forward_only.report(view, kind, unit=unit).splitlines()[0]
            assert "Backward" not in header and "Recompute" not in header and "Total" not in header
    document = json.loads(forward_only.report(view, "json"))
    assert not {"backward_flops", "total_flops", "total_macs"} & document["totals"].keys()
    assert all("total_flops" not in row for row in document["rows"])


def test_the_op_type_view_has_the_backward_time_of_its_nodes(counter: TorchFLOPsByFX) -> None:
    rows = {row.op_type: row for row in counter.by_op_type()}
    by_type = {"nn.Linear": ("0", "2"), "nn.ReLU": ("1",)}
    records = {r.module_path: r for r in counter.records if r.op == "call_module"}
    for op_type, paths in by_type.items():
        assert rows[op_type].backward_time_ms == pytest.approx(sum(records[p].backward_time_ms for p in paths))
    assert "Backward time (ms)" in counter.report("ops", "csv").splitlines()[0]


def scaled_product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x @ w) * 2


torch.fx.wrap("scaled_product")  # no rule: the aten fallback counts it as aten.mm and aten.mul


class ScaledProduct(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(64, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_product(x, self.w)


def test_a_node_the_fallback_split_books_its_backward_on_its_first_aten_op() -> None:
    counter = TorchFLOPsByFX(ScaledProduct())
    counter.propagate(torch.randn(8, 64, requires_grad=True), backward=True)
    backward = (8 * 16  # the mul's gradient: grad * 2
                + 8 * 64 * (2 * 16 - 1)  # grad x: (8, 16) @ (16, 64), 15,872
                + 64 * 16 * (2 * 8 - 1))  # grad w: (64, 8) @ (8, 16), 15,360
    rows = csv_columns(counter.report("ops", "csv"), 0, "FLOPs", "Backward FLOPs")
    assert rows == {"aten.mm": (8 * 16 * (2 * 64 - 1), backward), "aten.mul": (8 * 16, 0)}  # as its time is


@pytest.mark.parametrize("view", ["nodes", "modules", "ops", "layers"])
def test_json_rows_and_totals_have_forward_backward_and_total(counter: TorchFLOPsByFX, view: str) -> None:
    document = json.loads(counter.report(view, "json"))
    assert document["version"] == render.SCHEMA_VERSION
    totals = document["totals"]
    for unit in UNITS:
        forward, backward = sum(FORWARD[unit].values()), sum(BACKWARD[unit].values())
        assert (totals[unit], totals[f"backward_{unit}"], totals[f"recompute_{unit}"]) == (forward, backward, 0)
        assert totals[f"total_{unit}"] == forward + backward  # 88,144 FLOPs, 45,440 MACs
    for row in document["rows"]:
        for unit in UNITS:
            if row.get(unit) is not None and row.get(f"backward_{unit}") is not None:
                assert row[f"total_{unit}"] == row[unit] + row[f"backward_{unit}"] + row[f"recompute_{unit}"]
    if view == "layers":  # the rows sum to the totals (the default loss's backward costs nothing)
        assert sum(row["total_flops"] for row in document["rows"]) == totals["total_flops"]


def test_print_total_flops_states_the_forward_backward_and_their_sum(
        counter: TorchFLOPsByFX, forward_only: TorchFLOPsByFX, capsys: pytest.CaptureFixture[str]) -> None:
    forward = sum(FORWARD["flops"].values())  # 41,216
    assert counter.print_total_flops() == forward
    lines = capsys.readouterr().out.splitlines()
    (ff, fm), (bf, bm) = whole(FORWARD), whole(BACKWARD)
    assert lines == [f"total_flops = {forward:,}",
                     f"forward {ff:,} FLOPs ({fm:,} MACs) + backward {bf:,} FLOPs ({bm:,} MACs) = "
                     f"{ff + bf:,} FLOPs ({fm + bm:,} MACs)"]  # 88,144 FLOPs (45,440 MACs)
    forward_only.print_total_flops()
    assert capsys.readouterr().out == f"total_flops = {forward:,}\n"


class Checkpointed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = chain()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, x, use_reentrant=False)


def test_the_op_type_and_layer_views_show_the_recomputation() -> None:
    counter = TorchFLOPsByFX(Checkpointed())
    counter.propagate(torch.randn(8, 64, requires_grad=True), backward=True)
    # non-reentrant checkpointing stops once it has the relu's output: the first Linear and the relu run again
    recomputed = {"flops": {"block.0": FORWARD["flops"]["0"], "block.1": 8 * 32, "block.2": 0},
                  "macs": {"block.0": FORWARD["macs"]["0"], "block.1": 0, "block.2": 0}}
    for unit, label in (("flops", "FLOPs"), ("macs", "MACs")):
        layers = csv_columns(counter.report("layers", "csv", unit=unit), 0, f"Recompute {label}")
        expected = {path: (value,) for path, value in recomputed[unit].items()} | {"Total": (sum(recomputed[unit].values()),)}
        assert {path: layers[path] for path in expected} == expected
        assert all(value == (0,) for path, value in layers.items() if path not in expected)  # (checkpointing's own 'block' row on some torch versions)
        ops = csv_columns(counter.report("ops", "csv", unit=unit), 0, f"Recompute {label}")
        values = recomputed[unit]
        expected = {"torch.nn.functional.linear": (values["block.0"] + values["block.2"],),
                    "torch.nn.functional.relu": (values["block.1"],)}
        assert {op: ops[op] for op in expected} == expected
        assert all(value == (0,) for op, value in ops.items() if op not in expected)
        assert f"Recompute {label}" in counter.report("modules", "text", unit=unit).splitlines()[0]
    recompute = sum(recomputed["flops"].values()), sum(recomputed["macs"].values())  # 33,024 and 16,640
    assert f"+ recompute {recompute[0]:,} FLOPs ({recompute[1]:,} MACs) = " in counter.step_totals_line()


def test_profile_with_a_backward_shows_the_backward_macs() -> None:
    macs, _, info = profile(chain(), torch.randn(8, 64), backward=True)
    assert macs == sum(FORWARD["macs"].values())
    assert [layer.backward_macs for layer in info.layers] == list(BACKWARD["macs"].values())
    assert info.total.backward_macs == sum(BACKWARD["macs"].values())  # 24,576
    assert "Backward MACs" in info.summary().splitlines()[0]
    assert "Backward" not in profile(chain(), torch.randn(8, 64), verbose=False)[2].summary()


FACTORY = """
from torch import nn


def make_chain():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
"""


def test_cli_train_prints_forward_backward_and_total_in_flops_and_macs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "chain_models.py"
    path.write_text(FACTORY)
    spec = [f"{path}:make_chain", "--input-shape", "8,64", "--train"]
    assert cli.main([*spec, "--view", "ops", "--unit", "macs"]) == 0
    out = capsys.readouterr().out
    (ff, fm), (bf, bm) = whole(FORWARD), whole(BACKWARD)
    assert (f"forward {ff:,} FLOPs ({fm:,} MACs) + backward {bf:,} FLOPs ({bm:,} MACs) = "
            f"{ff + bf:,} FLOPs ({fm + bm:,} MACs)") in out
    assert "Backward MACs" in out.splitlines()[0]
    assert cli.main([*spec, "--view", "layers", "--format", "csv"]) == 0
    layers = csv_columns(capsys.readouterr().out, 0, "FLOPs", "Backward FLOPs", "Total FLOPs")
    assert layers["Total"] == (ff, bf, ff + bf)
