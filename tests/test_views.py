"""Views of one set of node records: module hierarchy, op types, exports (text, Markdown, CSV, JSON)."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from models import SmallConvNet, has_branchy_identity
from torch_flops import TorchFLOPsByFX, render

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def resnet18() -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(torchvision.models.resnet18())
    counter.propagate(torch.randn(1, 3, 224, 224))
    return counter


@pytest.mark.parametrize("depth", [0, 1, 2, 3, None])
def test_module_rows_sum_to_the_total_at_every_depth(resnet18: TorchFLOPsByFX, depth: int | None) -> None:
    rows = resnet18.by_module(depth=depth)
    assert sum(r.self_flops for r in rows) == resnet18.total_flops == 3_640_289_280
    assert sum(r.self_macs for r in rows) == resnet18.total_macs == 1_824_034_280
    assert rows[0].path == "" and rows[0].flops == resnet18.total_flops and rows[0].params == 11_689_512
    if depth is not None:
        assert max(r.depth for r in rows) == depth


def test_module_rows_are_inclusive_and_in_tree_order(resnet18: TorchFLOPsByFX) -> None:
    rows = {r.path: r for r in resnet18.by_module(depth=2)}
    layer1 = rows["layer1"]
    assert layer1.module_class == "Sequential" and layer1.self_flops == 0
    assert layer1.flops == rows["layer1.0"].flops + rows["layer1.1"].flops
    # conv1: 64*112*112 outputs * (2 * 3*49 - 1) = 235,225,088; its 9,408 weights
    assert (rows["conv1"].flops, rows["conv1"].params) == (235_225_088, 9_408)
    order = [r.path for r in resnet18.by_module(depth=1)]
    assert order == ["", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]


def test_sort_and_top(resnet18: TorchFLOPsByFX) -> None:
    top = resnet18.by_module(depth=2, sort="flops", top=3)
    assert [r.path for r in top] == ["", "layer1", "layer2"]  # 3.64G, 928M, 824M
    ops = resnet18.by_op_type(top=2)
    assert [o.op_type for o in ops] == ["nn.Conv2d", "nn.BatchNorm2d"] and ops[0].count == 20
    with pytest.raises(ValueError, match="cannot sort by 'speed'"):
        resnet18.by_module(sort="speed")
    with pytest.raises(ValueError, match="top must be >= 1"):
        resnet18.by_op_type(top=0)


def test_op_types_sum_to_the_total() -> None:
    counter = TorchFLOPsByFX(SmallConvNet())
    counter.propagate(torch.randn(2, 3, 8, 8))
    ops = {o.op_type: o for o in counter.by_op_type()}
    assert sum(o.flops for o in ops.values()) == counter.total_flops
    assert {"nn.Conv2d", "nn.BatchNorm2d", "nn.ReLU", "nn.MaxPool2d", "nn.Linear"} <= set(ops)


def test_calls_inside_leaves_are_op_types_and_leaf_modules_keep_rows() -> None:
    counter = TorchFLOPsByFX(has_branchy_identity())
    counter.propagate(torch.rand(3, 4) + 0.1)
    ops = {o.op_type: o for o in counter.by_op_type()}
    assert ops["Tensor.sum"].flops == 11 and ops["Tensor.gt"].flops == 1
    assert ops["torch.nn.functional.linear"].flops == 12 * 7 + 12  # the inner Linear(4, 4) on (3, 4), inside the leaf
    assert ops["nn.Linear"].flops == 12 * 7 + 12  # the traced pre layer
    rows = {r.path: r for r in counter.by_module()}
    assert rows["block.inner"].flops == 96 and rows["block"].flops == 96 + 12 and rows["block"].self_flops == 12
    assert sum(r.self_flops for r in rows.values()) == counter.total_flops


@pytest.mark.parametrize("view", ["nodes", "modules", "ops", "layers"])
def test_every_view_in_every_format_names_its_unit(resnet18: TorchFLOPsByFX, view: str) -> None:
    text = resnet18.report(view, "text", depth=1)
    md = resnet18.report(view, "md", depth=1)
    rows = list(csv.reader(io.StringIO(resnet18.report(view, "csv", depth=1))))
    assert "FLOPs" in text.splitlines()[0] and "FLOPs" in md.splitlines()[0] and "FLOPs" in rows[0]
    assert md.splitlines()[1].startswith("|-")
    macs_header = resnet18.report(view, "text", depth=1, unit="macs").splitlines()[0]
    assert "MACs" in macs_header and "FLOPs" not in macs_header
    document = json.loads(resnet18.report(view, "json", depth=1))
    assert document["schema"] == "torch_flops/result" and document["version"] == render.SCHEMA_VERSION
    assert document["torch_version"] == torch.__version__ and document["view"] == view
    assert document["inputs"] == [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert document["totals"]["flops"] == 3_640_289_280 and document["totals"]["params"] == 11_689_512
    assert "matmul" in document["conventions"] and document["rows"]


@pytest.mark.parametrize(("unit", "total"), [("flops", 3_640_289_280), ("macs", 1_824_034_280)])
def test_layer_rows_sum_to_the_total_in_either_unit(resnet18: TorchFLOPsByFX, unit: str, total: int) -> None:
    rows = json.loads(resnet18.report("layers", "json", unit=unit))["rows"]
    assert sum(r[unit] for r in rows) == total and sum(r["params"] for r in rows) == 11_689_512
    paths = {r["path"] for r in rows}
    # a BasicBlock's own forward runs the residual add: FLOPs, no MACs, so the block has a row in FLOPs only
    assert ("layer1.0" in paths) is (unit == "flops")
    top = json.loads(resnet18.report("layers", "json", unit=unit, top=1))["rows"]
    assert [r["path"] for r in top] == ["conv1"]  # 235,225,088 FLOPs, 118,013,952 MACs: the largest layer


def test_csv_of_modules_has_raw_numbers(resnet18: TorchFLOPsByFX) -> None:
    rows = list(csv.DictReader(io.StringIO(resnet18.report("modules", "csv", depth=1))))
    assert rows[1]["Module"] == "conv1" and rows[1]["FLOPs"] == "235225088" and rows[1]["Params"] == "9408"
    assert sum(int(r["Self FLOPs"]) for r in rows) == 3_640_289_280


def test_bad_view_names(resnet18: TorchFLOPsByFX) -> None:
    with pytest.raises(ValueError, match=r"view must be one of \('nodes', 'modules', 'ops', 'layers'\), got 'tree'"):
        resnet18.report("tree")
    with pytest.raises(ValueError, match=r"format must be one of \('text', 'md', 'csv', 'json'\), got 'xml'"):
        resnet18.report("modules", "xml")
    with pytest.raises(ValueError, match="unit must be one of"):
        resnet18.report("modules", unit="gflops")
    with pytest.raises(ValueError, match="depth must be >= 0"):
        resnet18.by_module(depth=-1)


def test_to_dataframe(resnet18: TorchFLOPsByFX) -> None:
    pd = pytest.importorskip("pandas")
    frame = resnet18.to_dataframe("modules", depth=1)
    assert isinstance(frame, pd.DataFrame) and int(frame["self_flops"].sum()) == 3_640_289_280
