"""compare.py: our numbers on the seed cases, how peer tools are reported, and the explanation lines.

Only FlopCounterMode (part of torch) is assumed installed; the other peers are exercised by
``python compare.py --case all``.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare", _ROOT / "compare.py")
compare = importlib.util.module_from_spec(_spec)
sys.modules["compare"] = compare  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(compare)

FLOP_COUNTER_MODE = next(t for t in compare.TOOLS if t.name == "FlopCounterMode")


def _case(group: str) -> "compare.Case":
    (case,) = compare.select_cases(group)
    return case


@pytest.mark.parametrize(
    ("group", "flops", "macs", "multiplies", "adds", "bias", "elementwise"),
    [
        # Linear(5, 4) on (1, 5): 4 dot products of k = 5: 4 * 5 = 20 multiplies, 4 * (5 - 1) = 16 adds,
        # 4 bias adds: 20 + 16 + 4 = 40 FLOPs; MACs 4 * 5 + 4 = 24
        ("simple", 40, 24, 20, 16, 4, 0),
        # then x += 1.: one add per output, 4 more FLOPs: 44; elementwise ops cost 0 MACs, so MACs stay 24
        ("add_one", 44, 24, 20, 16, 4, 4),
        # no bias: 20 + 16 = 36 FLOPs; 4 * 5 = 20 MACs
        ("linear_no_bias", 36, 20, 20, 16, 0, 0),
    ],
)
def test_seed_cases_our_numbers_and_breakdown(group, flops, macs, multiplies, adds, bias, elementwise):
    ours = compare.run_ours(_case(group))
    assert ours.error is None
    assert (ours.flops, ours.macs) == (flops, macs)
    b = ours.breakdown
    assert (b.total_flops, b.total_macs) == (flops, macs)
    products = compare.PRODUCT_FAMILIES
    assert (b.sum("multiplies", products), b.sum("adds", products), b.sum("bias", products)) == (multiplies, adds, bias)
    assert b.sum("flops", ["elementwise"]) == elementwise
    assert b.sum("flops") == flops  # the buckets account for every FLOP


def test_quick_selects_the_three_seed_cases():
    assert [c.label for c in compare.select_cases("all", quick=True)] == ["simple", "add_one", "linear_no_bias"]
    assert [c.label for c in compare.select_cases("attention_block")] == ["attn_block eager", "attn_block fused"]
    with pytest.raises(ValueError, match="unknown case"):
        compare.select_cases("nope")


def _never_called(model, x):
    raise AssertionError("a tool that is not installed must not run")


def test_missing_tool_is_reported_not_installed():
    missing = compare.Tool("no_such_counter", "torch_flops_no_such_counter_pkg", compare.MACS, _never_called)
    measurement = compare.run_tool(missing, _case("simple"))
    assert (measurement.value, measurement.status) == (None, "not installed")
    assert compare.explain(measurement, compare.run_ours(_case("simple")).breakdown) == "no_such_counter: not installed"
    result = compare.compare_case(_case("simple"), (missing,))
    table = compare.to_table([result])
    assert "| no_such_counter | MACs   | not installed |" in table
    assert compare.exit_code([result]) == 0  # a missing peer is not an error


def _patches_and_raises(model, x):
    # what ptflops / calflops do, then fail before unpatching
    F.relu = lambda *args, **kwargs: None
    torch.Tensor.matmul = lambda *args, **kwargs: None  # adds an attribute shadowing TensorBase.matmul
    torch.set_default_dtype(torch.float64)
    raise ValueError("boom\nsecond line")


def test_failing_tool_is_reported_with_its_first_line_and_torch_is_restored():
    relu = F.relu
    broken = compare.Tool("broken", "torch", compare.FLOPS, _patches_and_raises)
    measurement = compare.run_tool(broken, _case("simple"))
    assert (measurement.value, measurement.status) == (None, "failed: ValueError: boom")
    assert F.relu is relu
    assert "matmul" not in vars(torch.Tensor)  # TensorBase.matmul is visible again
    assert torch.get_default_dtype() is torch.float32
    assert compare.explain(measurement, None) == "broken: failed: ValueError: boom"


def test_flop_counter_mode_on_simple_model():
    case = _case("simple")
    measurement = compare.run_tool(FLOP_COUNTER_MODE, case)
    # aten.addmm: 2 * (1 * 5 * 4) = 40; the bias add of addmm is not counted
    assert (measurement.value, measurement.status) == (40, "ok")
    line = compare.explain(measurement, compare.run_ours(case).breakdown)
    assert line == (
        "FlopCounterMode: 40 FLOPs: matches our 2 x 20 multiplies (mm/bmm/addmm/convolution) (= our total FLOPs); "
        "= our 40 FLOPs - 4 bias adds + 4 (k, not k - 1, adds per dot product). "
        "Not counted (our FLOPs): 4 bias adds. [FlopCounterMode by op: aten.addmm 40]"
    )


def test_flop_counter_mode_on_add_one_and_no_bias():
    add_one = _case("add_one")
    measurement = compare.run_tool(FLOP_COUNTER_MODE, add_one)
    assert measurement.value == 40  # x += 1 is not a matmul: still 2 * 20
    line = compare.explain(measurement, compare.run_ours(add_one).breakdown)
    # 40 = 44 - 4 bias + 4 (k adds) - 4 (x += 1)
    assert "= our 44 FLOPs - 4 bias adds + 4 (k, not k - 1, adds per dot product) - 4 not counted" in line
    assert "Not counted (our FLOPs): 4 bias adds, 4 elementwise: add in SimpleModel" in line

    no_bias = _case("linear_no_bias")
    measurement = compare.run_tool(FLOP_COUNTER_MODE, no_bias)
    assert measurement.value == 40  # aten.mm: 2 * 20
    line = compare.explain(measurement, compare.run_ours(no_bias).breakdown)
    assert line.startswith("FlopCounterMode: 40 FLOPs: matches our 2 x 20 multiplies (mm/bmm/addmm/convolution); "
                           "= our 36 FLOPs + 4 (k, not k - 1, adds per dot product)")


def test_a_number_the_convention_does_not_predict_shows_the_remainder():
    case = _case("simple")
    off = compare.Measurement(FLOP_COUNTER_MODE, 41, "ok")
    line = compare.explain(off, compare.run_ours(case).breakdown)
    assert "matches" not in line
    assert "our records predict 40 = 2 x 20 multiplies (mm/bmm/addmm/convolution); unexplained remainder +1" in line


class _Attention(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x)


def test_sdpa_breakdown_and_flop_counter_mode_on_cpu():
    # q, k, v of (1, 2, 4, 8): B = 2 heads, L = S = 4, E = Ev = 8 (docs/conventions.md: 1,048 FLOPs)
    case = compare.Case("sdpa", "sdpa", "F.scaled_dot_product_attention on (1, 2, 4, 8)", _Attention, (1, 2, 4, 8))
    ours = compare.run_ours(case)
    (item,) = [i for i in ours.breakdown.items if i.family == "attention"]
    assert item.multiplies == 2 * 4 * 4 * 8 + 2 * 4 * 8 * 4  # 256 + 256 = 512 = our MACs
    assert item.adds == 512 - 2 * 4 * 4 - 2 * 4 * 8  # one fewer add than multiplies per dot product: 416
    assert item.scores == 32 and item.softmax == 8 * (3 * 4 - 1)  # 88
    assert item.flops == 512 + 416 + 32 + 88 == 1048
    measurement = compare.run_tool(FLOP_COUNTER_MODE, case)
    line = compare.explain(measurement, ours.breakdown)
    if compare.flop_counter_mode_prices_cpu_sdpa():  # torch 2.15 on: a formula for the CPU kernel
        assert measurement.value == 2 * 512  # 2 per multiply of q @ k^T and attn @ v
        assert line.startswith("FlopCounterMode: 1,024 FLOPs: matches our 2 x 512 multiplies (SDPA's two products); "
                               "= our 1,048 FLOPs + 96 (k, not k - 1, adds per dot product) - 120 not counted. "
                               "Not counted (our FLOPs): 120 SDPA score scaling, softmax and mask.")  # 32 + 88
    else:  # no formula for aten._scaled_dot_product_flash_attention_for_cpu: CPU SDPA counts 0
        assert measurement.value == 0
        assert line.startswith("FlopCounterMode: 0 FLOPs: matches our 0")
        assert ("1,048 attention: scaled_dot_product_attention in _Attention (this torch has no formula for "
                "aten._scaled_dot_product_flash_attention_for_cpu)") in line


def test_main_quick_prints_the_table_and_exits_0(capsys):
    missing = compare.Tool("no_such_counter", "torch_flops_no_such_counter_pkg", compare.MACS, _never_called)
    assert compare.main(["--quick"], tools=(FLOP_COUNTER_MODE, missing)) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()
    assert table == [
        "| tool            | unit   |        simple |       add_one |   linear_no_bias |",
        "|-----------------|--------|---------------|---------------|------------------|",
        "| torch_flops     | FLOPs  |            40 |            44 |               36 |",
        "| torch_flops     | MACs   |            24 |            24 |               20 |",
        "| FlopCounterMode | FLOPs  |            40 |            40 |               40 |",
        "| no_such_counter | MACs   | not installed | not installed |    not installed |",
    ]
    assert out.count("  no_such_counter: not installed") == 3


def test_our_failure_makes_the_exit_code_1():
    # a (1, 6) input does not fit Linear(5, 4): torch_flops raises, which is reported and fails the run
    bad = compare.Case("simple", "bad", "SimpleModel on (1, 6)", compare.CASES[0].make_model, (1, 6))
    result = compare.compare_case(bad, (FLOP_COUNTER_MODE,))
    assert result.ours.error is not None and result.ours.flops is None
    assert result.measurements[0].status.startswith("failed: RuntimeError")
    assert compare.exit_code([result]) == 1
