"""The engine end to end: seed cases, records, printing, inputs, ignore_ops and errors."""

import csv
import operator
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from models import Branchy, HasBranchy, NoParams, SimpleModel, SmallConvNet, TwoInputs
from torch_flops import Column, NodeExecutionError, Status, TorchFLOPsByFX, TraceError
from torch_flops.render import DETERMINISTIC_COLUMNS, to_text

GOLDEN = Path(__file__).parent / "test_output"


def count(model: nn.Module, *inputs: torch.Tensor, **kwargs) -> TorchFLOPsByFX:
    counter = TorchFLOPsByFX(model, **kwargs)
    counter.propagate(*inputs)
    return counter


@pytest.mark.parametrize(
    "model, expected",
    [
        (SimpleModel(), 40),  # 4 outputs * (2*5 - 1) + 4 bias = 40
        (SimpleModel(add_one=True), 44),  # 40 + 4 adds of `x += 1.`
        (SimpleModel(bias=False), 36),  # 4 * (2*5 - 1) = 36
    ],
    ids=["linear", "add_one", "linear_no_bias"],
)
def test_seed_comparison_cases(model: nn.Module, expected: int) -> None:
    counter = count(model, torch.randn(1, 5))
    assert counter.print_total_flops(show=False) == expected
    assert counter.total_flops == expected


def test_small_convnet_total_is_sum_of_hand_counts() -> None:
    counter = count(SmallConvNet(), torch.randn(2, 3, 8, 8))
    by_name = {r.name: r.flops for r in counter.records}
    conv = 2 * 4 * 8 * 8 * (2 * 3 * 9 - 1) + 2 * 4 * 8 * 8  # 512 outputs * 53 + 512 bias = 27,648
    bn = 2 * 4 * 8 * 8 * 4  # 4 per element with affine = 2,048
    relu = 2 * 4 * 8 * 8  # 512
    pool = 2 * 4 * 4 * 4 * (4 - 1)  # 128 outputs * 3 compares = 384
    fc = 2 * 10 * (2 * 64 - 1) + 2 * 10  # 20 outputs * 127 + 20 = 2,560
    mul = 2 * 10  # 20
    softmax = 2 * (3 * 10 - 1)  # 2 rows * 29 = 58
    assert by_name["conv"] == conv == 27_648
    assert (by_name["bn"], by_name["act"], by_name["pool"], by_name["fc"]) == (bn, relu, pool, fc)
    assert by_name["mul"] == mul and by_name["softmax"] == softmax
    assert counter.total_flops == conv + bn + relu + pool + fc + mul + softmax == 33_230


def test_records_are_typed_and_complete() -> None:
    counter = count(SmallConvNet(), torch.randn(1, 3, 8, 8))
    records = counter.records
    assert [r.name for r in records] == [n.name for n in counter.graph_model.graph.nodes]
    conv = next(r for r in records if r.name == "conv")
    assert (conv.op, conv.target, conv.module_path, conv.module_class) == ("call_module", "conv", "conv", "Conv2d")
    assert conv.status is Status.RULE and conv.input_shapes == ((1, 3, 8, 8),) and conv.output_shapes == ((1, 4, 8, 8),)
    flatten = next(r for r in records if r.name == "flatten")
    assert flatten.status is Status.ZERO and flatten.flops == 0
    assert all(r.time_ms is not None and r.time_ms >= 0 for r in records)
    assert all(r.mem_before_bytes is None and r.mem_delta_bytes is None for r in records)  # CPU
    assert counter.total_flops == sum(r.flops for r in records)


def test_result_rows_keep_upstream_column_order() -> None:
    counter = count(SimpleModel(add_one=True), torch.randn(1, 5))
    rows = counter.print_result_table(show=False)
    assert [row[:6] for row in rows] == [
        ["x", "placeholder", "x", "", "", 0],
        ["layer", "call_module", "layer", "layer", "Linear", 40],
        ["add", "call_function", "operator.add", "", "", 4],
        ["output", "output", "output", "", "", 0],
    ]
    assert all(len(row) == len(Column) for row in rows)
    assert all(row[7:10] == [None, None, None] for row in rows)  # no memory columns on CPU


def test_rendered_table_matches_golden_file() -> None:
    counter = count(SmallConvNet(), torch.randn(1, 3, 8, 8))
    text = to_text(counter.records, DETERMINISTIC_COLUMNS) + "\n"
    golden = GOLDEN / "small_convnet_table.txt"
    if os.environ.get("TORCH_FLOPS_REGEN_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_print_functions_print_and_return(capsys: pytest.CaptureFixture[str]) -> None:
    counter = count(SimpleModel(add_one=True), torch.randn(1, 5))
    rows = counter.print_result_table()
    assert counter.print_total_flops() == 44
    total_time = counter.print_total_time()
    assert counter.print_max_memory() is None
    out = capsys.readouterr().out
    assert "operator.add" in out and "total_flops = 44\n" in out
    assert "max_memory = not measured (CPU run)" in out
    assert total_time == pytest.approx(sum(row[6] for row in rows))


def test_unsupported_nodes_are_listed_not_counted(capsys: pytest.CaptureFixture[str]) -> None:
    class Exponential(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.matrix_exp(x) + 1

    counter = count(Exponential(), torch.randn(4, 4))
    exp = next(r for r in counter.records if r.target == "torch.linalg.matrix_exp")
    assert exp.status is Status.UNSUPPORTED and exp.flops is None and exp.macs is None
    assert exp.unsupported_ops == ("aten.linalg_matrix_exp",)
    assert counter.print_total_flops() == 16  # only the add: 4*4
    assert "total_flops = 16 (1 node not counted: torch.linalg.matrix_exp [aten.linalg_matrix_exp])" in capsys.readouterr().out
    assert [r.name for r in counter.unsupported] == [exp.name]
    assert "unsupported" in to_text(counter.records)


def test_csv_has_raw_values(tmp_path: Path) -> None:
    counter = count(SimpleModel(add_one=True), torch.randn(1, 5))
    path = tmp_path / "result.csv"
    counter.save_result_to_csv(path)
    rows = list(csv.reader(path.open()))
    assert rows[0] == [c.header for c in Column]
    assert rows[2][:6] == ["layer", "call_module", "layer", "layer", "Linear", "40"]
    assert rows[3][5] == "4" and rows[3][7:11] == ["", "", "", "rule"]


def test_ignore_ops_by_module_class_function_and_method() -> None:
    x = torch.randn(1, 3, 8, 8)
    counter = count(SmallConvNet(), x, ignore_ops=[nn.Conv2d, operator.mul, "flatten", torch.softmax])
    status = {r.name: r.status for r in counter.records}
    assert status["conv"] is status["mul"] is status["softmax"] is Status.IGNORED
    assert status["flatten"] is Status.IGNORED and status["fc"] is Status.RULE
    full = count(SmallConvNet(), x).total_flops
    # ignored: conv 256 * 53 + 256 = 13,824; mul 10; softmax 29
    assert counter.total_flops == full - 13_824 - 10 - 29
    assert count(SimpleModel(), torch.randn(1, 5), ignore_ops=nn.Linear).total_flops == 0


def test_keyword_and_default_inputs() -> None:
    model = TwoInputs()
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(x, y=y)
    torch.testing.assert_close(out, model(x, y))
    # linear 6 * (2*3 - 1) + 6 = 36; * scale 6; + y 6
    assert counter.total_flops == 48
    torch.testing.assert_close(counter.propagate(x, y, 3.0), model(x, y, 3.0))
    with pytest.raises(TypeError, match=r"TwoInputs.forward\(x: torch.Tensor, y: torch.Tensor, scale: float = 2.0\) cannot take these inputs: got an unexpected keyword argument 'z'"):
        counter.propagate(x, y, z=1)
    with pytest.raises(TypeError, match="cannot take these inputs: missing a required argument: 'y'"):
        counter.propagate(x)


def test_model_without_parameters() -> None:
    counter = count(NoParams(), torch.randn(2, 3), torch.randn(3, 4))
    assert counter.total_flops == 8 * (2 * 3 - 1) + 8  # matmul 40 + relu 8


def test_propagate_returns_model_output() -> None:
    model = SmallConvNet().eval()
    x = torch.randn(2, 3, 8, 8)
    out = TorchFLOPsByFX(model).propagate(x)
    torch.testing.assert_close(out, model(x))


def test_untraceable_model_names_the_module_without_auto_leaf() -> None:
    with pytest.raises(TraceError, match=r"module 'block' \(Branchy\).*limitations-of-symbolic-tracing") as info:
        TorchFLOPsByFX(HasBranchy(), auto_leaf=False)
    assert info.value.module_path == "block" and info.value.module_class == "Branchy"
    with pytest.raises(TraceError, match=r"the root module \(Branchy\)"):
        TorchFLOPsByFX(Branchy(), auto_leaf=False)


def test_wrong_input_shape_names_node_and_shapes() -> None:
    counter = TorchFLOPsByFX(SimpleModel())
    with pytest.raises(NodeExecutionError, match=r"node 'layer' \(call_module layer in module 'layer' \(Linear\)\) failed on inputs with shapes \[\[1, 7\]\]") as info:
        counter.propagate(torch.randn(1, 7))
    assert info.value.node_name == "layer"


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="expects an nn.Module, got function"):
        TorchFLOPsByFX(lambda x: x)
    with pytest.raises(ValueError, match="mem_func_name must be one of"):
        TorchFLOPsByFX(SimpleModel(), mem_func_name="reserved")
    with pytest.raises(RuntimeError, match="call propagate\\(\\) first"):
        TorchFLOPsByFX(SimpleModel()).print_total_flops()


def test_empty_input_counts_zero() -> None:
    assert count(SimpleModel(add_one=True), torch.randn(0, 5)).total_flops == 0


@pytest.mark.cuda
def test_cuda_memory_columns(cuda_device: torch.device) -> None:
    model = SmallConvNet().to(cuda_device)
    for mem_func_name in ("max_memory_allocated", "memory_allocated"):
        counter = count(model, torch.randn(2, 3, 8, 8, device=cuda_device), mem_func_name=mem_func_name)
        assert counter.total_flops == count(SmallConvNet(), torch.randn(2, 3, 8, 8)).total_flops
        for r in counter.records:
            assert r.mem_before_bytes >= 0 and r.mem_after_bytes >= 0
            assert r.mem_delta_bytes == r.mem_after_bytes - r.mem_before_bytes
            if mem_func_name == "max_memory_allocated":  # the peak since the run began only grows
                assert r.mem_after_bytes >= r.mem_before_bytes
        ops = [r for r in counter.records if r.op in ("call_module", "call_function", "call_method")]
        # the allocator's peak while a node ran holds at least its inputs and outputs, in whole blocks
        assert all(r.mem_peak_bytes >= r.live_peak_bytes and r.mem_inside_bytes >= 0 for r in ops)
        assert counter.print_max_memory(show=False) == max(
            max(r.mem_before_bytes, r.mem_after_bytes) for r in counter.records
        )
