"""``report("layers")``: the layer-wise view sorts, truncates and chooses its unit like the other views,
and its rows sum to its totals."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from models import SmallConvNet, has_branchy_identity
from torch_flops import TorchFLOPsByFX, cli, profile

VIEWS = ("nodes", "modules", "ops", "layers")


class TwoLinear(nn.Module):
    """Linear(64, 32) -> ReLU -> Linear(32, 16), then ``* 2`` in the root's own ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.r = nn.ReLU()
        self.b = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.r(self.a(x))) * 2


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + x  # the residual add: FLOPs on the block's own row, no MACs


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


# TwoLinear on (8, 64)
A_FLOPS = 8 * 32 * (2 * 64 - 1) + 8 * 32  # 32,768
A_MACS = 8 * 32 * 64 + 8 * 32  # 16,640
R_FLOPS = 8 * 32  # 256
B_FLOPS = 8 * 16 * (2 * 32 - 1) + 8 * 16  # 8,192
B_MACS = 8 * 16 * 32 + 8 * 16  # 4,224
ROOT_FLOPS = 8 * 16  # the * 2: 128
TOTAL_FLOPS = A_FLOPS + R_FLOPS + B_FLOPS + ROOT_FLOPS  # 41,344
TOTAL_MACS = A_MACS + B_MACS  # 20,864
PARAMS = (64 * 32 + 32) + (32 * 16 + 16)  # 2,608


@pytest.fixture(scope="module")
def two_linear() -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(TwoLinear())
    counter.propagate(torch.randn(8, 64))
    return counter


def layers_json(counter: TorchFLOPsByFX, **options) -> dict:
    return json.loads(counter.report("layers", "json", **options))


def test_flops_unit_shows_flops_and_the_root_row(two_linear: TorchFLOPsByFX) -> None:
    assert (two_linear.total_flops, two_linear.total_macs) == (TOTAL_FLOPS, TOTAL_MACS)
    rows = list(csv.reader(io.StringIO(two_linear.report("layers", "csv"))))
    assert rows[0] == ["Name", "Class", "Input shape", "Output shape", "FLOPs", "Params"]
    assert [(r[0], int(r[4])) for r in rows[1:]] == [
        ("a", A_FLOPS), ("r", R_FLOPS), ("b", B_FLOPS), ("(root)", ROOT_FLOPS), ("Total", TOTAL_FLOPS)
    ]
    text = two_linear.report("layers", unit="flops")
    assert "FLOPs" in text.splitlines()[0] and "MACs" not in text
    assert text.splitlines()[-1].split()[-2:] == [f"{TOTAL_FLOPS:,}", f"{PARAMS:,}"]


def test_macs_unit_shows_macs(two_linear: TorchFLOPsByFX) -> None:
    rows = list(csv.reader(io.StringIO(two_linear.report("layers", "csv", unit="macs"))))
    assert rows[0][4] == "MACs"
    # the root's * 2 costs no MACs and the root owns no parameters: no row
    assert [(r[0], int(r[4])) for r in rows[1:]] == [("a", A_MACS), ("r", 0), ("b", B_MACS), ("Total", TOTAL_MACS)]
    assert "|   MACs |" in two_linear.report("layers", "md", unit="macs").splitlines()[0]


def test_sort_orders_rows_largest_first(two_linear: TorchFLOPsByFX) -> None:
    paths = [r["path"] for r in layers_json(two_linear, sort="flops")["rows"]]
    assert paths == ["a", "b", "r", ""]  # 32,768 > 8,192 > 256 > 128
    paths = [r["path"] for r in layers_json(two_linear, sort="params", unit="macs")["rows"]]
    assert paths == ["a", "b", "r"]  # 2,080 > 528 > 0
    text = two_linear.report("layers", sort="flops")
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["a", "b", "r", "(root)", "Total"]
    with pytest.raises(ValueError, match="cannot sort by 'time_ms'; sort by one of: path, "):
        two_linear.report("layers", sort="time_ms")


@pytest.mark.parametrize(("unit", "expected"), [("flops", [("a", A_FLOPS), ("b", B_FLOPS)]), ("macs", [("a", A_MACS), ("b", B_MACS)])])
def test_top_keeps_the_largest_rows_in_the_unit(two_linear: TorchFLOPsByFX, unit: str, expected: list) -> None:
    rows = layers_json(two_linear, top=2, unit=unit)["rows"]
    assert [(r["path"], r[unit]) for r in rows] == expected  # not the first two rows (a, r)
    lines = two_linear.report("layers", top=2, unit=unit).splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["a", "b", "Total"]
    total = TOTAL_FLOPS if unit == "flops" else TOTAL_MACS
    assert lines[-1].split()[-2] == f"{total:,}"  # the Total row is the model's, not the shown rows'
    all_rows = layers_json(two_linear, top=100, unit=unit)["rows"]
    assert len(all_rows) == (4 if unit == "flops" else 3)


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("top", [-1, 0])
def test_top_below_one_is_rejected_in_every_view(two_linear: TorchFLOPsByFX, view: str, top: int) -> None:
    with pytest.raises(ValueError, match=rf"top must be >= 1, got {top}"):
        two_linear.report(view, top=top)


def _residual() -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(Residual())
    counter.propagate(torch.randn(2, 16))
    return counter


def _has_branchy() -> TorchFLOPsByFX:  # a leaf kept whole: its inner module is costed by the fallback
    counter = TorchFLOPsByFX(has_branchy_identity())
    counter.propagate(torch.rand(3, 4) + 0.1)
    return counter


def _small_conv_net() -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(SmallConvNet())
    counter.propagate(torch.randn(2, 3, 8, 8))
    return counter


@pytest.mark.parametrize("make", [_residual, _has_branchy, _small_conv_net])
@pytest.mark.parametrize("unit", ["flops", "macs"])
def test_json_rows_sum_to_the_totals(make, unit: str) -> None:
    counter = make()
    document = layers_json(counter, unit=unit)
    assert document["unit"] == unit
    assert sum(r[unit] for r in document["rows"]) == document["totals"][unit]
    assert sum(r["params"] for r in document["rows"]) == document["totals"]["params"]
    assert document["totals"]["flops"] == counter.total_flops and document["totals"]["macs"] == counter.total_macs
    table = list(csv.reader(io.StringIO(counter.report("layers", "csv", unit=unit))))
    assert sum(int(r[4]) for r in table[1:-1]) == int(table[-1][4]) == document["totals"][unit]


def test_residual_block_rows_by_unit() -> None:
    counter = _residual()
    fc_flops = 2 * 16 * (2 * 16 - 1) + 2 * 16  # 1,024
    fc_macs = 2 * 16 * 16 + 2 * 16  # 544
    add_flops = 2 * 16  # 32
    head_flops, head_macs = 2 * 4 * (2 * 16 - 1) + 2 * 4, 2 * 4 * 16 + 2 * 4  # 256, 136
    flops = {r["path"]: r["flops"] for r in layers_json(counter)["rows"]}
    assert flops == {"blocks.0.fc": fc_flops, "blocks.0": add_flops, "blocks.1.fc": fc_flops, "blocks.1": add_flops,
                     "head": head_flops}
    assert sum(flops.values()) == counter.total_flops == 2 * (fc_flops + add_flops) + head_flops  # 2,368
    macs = {r["path"]: r["macs"] for r in layers_json(counter, unit="macs")["rows"]}
    assert macs == {"blocks.0.fc": fc_macs, "blocks.1.fc": fc_macs, "head": head_macs}  # the adds cost no MACs
    assert sum(macs.values()) == counter.total_macs == 2 * fc_macs + head_macs  # 1,224


def test_profile_keeps_its_macs_table() -> None:
    macs, params, info = profile(TwoLinear(), torch.randn(8, 64), verbose=False)
    assert (macs, params) == (TOTAL_MACS, PARAMS)
    assert [layer.path for layer in info.layers] == ["a", "r", "b"]
    assert info.summary().splitlines()[0].split()[-2:] == ["MACs", "Params"]


FACTORY = '''
from torch import nn


class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.r = nn.ReLU()
        self.b = nn.Linear(32, 16)

    def forward(self, x):
        return self.b(self.r(self.a(x))) * 2
'''


@pytest.fixture()
def factory(tmp_path: Path) -> str:
    path = tmp_path / "layer_models.py"
    path.write_text(FACTORY)
    return f"{path}:TwoLinear"


def test_cli_layers_view_sorted_and_truncated(factory: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([factory, "--input-shape", "8,64", "--view", "layers", "--sort", "flops", "--top", "3"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[-2:] == ["FLOPs", "Params"]
    assert [line.split()[0] for line in lines[2:6]] == ["a", "b", "r", "Total"]
    assert f"{A_FLOPS:,}" in lines[2] and f"{TOTAL_FLOPS:,}" in lines[5]
    assert f"total: {TOTAL_FLOPS:,} FLOPs, {TOTAL_MACS:,} MACs, {PARAMS:,} params" in out


def test_cli_layers_json_in_macs(factory: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([factory, "--input-shape", "8,64", "--view", "layers", "--unit", "macs", "--format", "json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["unit"] == "macs"
    assert [(r["path"], r["macs"]) for r in document["rows"]] == [("a", A_MACS), ("r", 0), ("b", B_MACS)]
    assert sum(r["macs"] for r in document["rows"]) == document["totals"]["macs"] == TOTAL_MACS


@pytest.mark.parametrize("top", ["-1", "0", "two"])
def test_cli_rejects_a_bad_top(factory: str, top: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([factory, "--input-shape", "8,64", "--view", "layers", "--top", top])
    assert info.value.code == 2
    assert f"argument --top: expected a positive number of rows, got '{top}'" in capsys.readouterr().err


def test_cli_bad_sort_field_is_a_usage_error(factory: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([factory, "--input-shape", "8,64", "--view", "layers", "--sort", "speed"])
    assert code == 2 and "torch-flops: error: cannot sort by 'speed'" in capsys.readouterr().err


# -- the node view sorts the same way ------------------------------------------------------------------
def test_node_view_top_follows_the_unit_and_puts_uncounted_nodes_last() -> None:
    class Inverse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.matrix_exp(x).relu() + self.fc(x)

    counter = TorchFLOPsByFX(Inverse())
    counter.propagate(torch.randn(4, 4))
    # fc: 4*4*(2*4 - 1) + 4*4 = 128 FLOPs, 4*4*4 + 4*4 = 80 MACs; relu 16 FLOPs; add 16 FLOPs; matrix_exp: no rule
    names = [r["name"] for r in json.loads(counter.report("nodes", "json", sort="flops"))["rows"]]
    assert names[0] == "fc" and names[-1] == "linalg_matrix_exp"
    rows = json.loads(counter.report("nodes", "json", top=2, unit="macs"))["rows"]
    assert [(r["name"], r["macs"]) for r in rows][0] == ("fc", 80)
