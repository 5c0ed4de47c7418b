"""``torch.autocast`` regions of ``forward`` are counted at the dtypes they run in: each node made inside
one runs inside it again (docs/conventions.md, "Autocast"); autocast around ``propagate`` applies to
the whole run, as it does to an eager forward; the graph holds only what ``forward`` switches on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torch_flops import TorchFLOPsByFX
from torch_flops.autocast import AUTOCAST_META

torch.manual_seed(0)

BF16, FP32 = 2, 4  # bytes per element
FC_FLOPS = 8 * 32 * (2 * 64 - 1) + 8 * 32  # Linear(64, 32) on (8, 64): 32,768, the product then the bias add
ADD_FLOPS = 8 * 32  # the (8, 32) + (32,) add: 256
FC_WEIGHT_BYTES = (32 * 64 + 32) * FP32  # the float32 weight and bias the layer reads (and casts inside)


class LinearInBfloat16(nn.Module):
    """``Linear(64, 32)`` inside a bfloat16 CPU autocast region, then a float32 add outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 32)
        self.shift = nn.Parameter(torch.randn(32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.fc(x)
        return y + self.shift  # bfloat16 + float32: float32, outside the region


class NestedOff(nn.Module):
    """An ``enabled=False`` region inside an enabled one: ``fc2`` and the cast before it run in float32."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.fc1(x)
            with torch.autocast("cpu", enabled=False):
                z = self.fc2(y.float())
            return self.fc3(z)


def by_name(counter: TorchFLOPsByFX) -> dict:
    return {record.name: record for record in counter.records}


def test_the_nodes_of_a_region_record_its_state_and_the_others_nothing() -> None:
    graph = TorchFLOPsByFX(LinearInBfloat16()).graph_model.graph
    state = {node.name: node.meta.get(AUTOCAST_META) for node in graph.nodes}
    assert state == {"x": None, "fc": (("cpu", torch.bfloat16),), "shift": None, "add": None, "output": None}


@pytest.mark.parametrize("timing", [True, False])
def test_a_region_runs_in_its_dtype_and_the_op_after_it_as_eager(timing: bool) -> None:
    model, x = LinearInBfloat16(), torch.randn(8, 64)
    counter = TorchFLOPsByFX(model)
    output = counter.propagate(x, timing=timing)
    expected = model(x)
    assert output.dtype == expected.dtype == torch.float32 and torch.equal(output, expected)
    records = by_name(counter)
    assert (records["fc"].flops, records["add"].flops) == (FC_FLOPS, ADD_FLOPS)  # FLOPs do not depend on the dtype
    if timing:  # the byte columns come with a full run
        assert records["fc"].written_bytes == 8 * 32 * BF16  # 512, not 8 * 32 * 4
        assert records["fc"].read_bytes == 8 * 64 * FP32 + FC_WEIGHT_BYTES  # it reads float32 and casts inside
        assert records["add"].read_bytes == 8 * 32 * BF16 + 32 * FP32
        assert records["add"].written_bytes == 8 * 32 * FP32


def test_saved_activations_of_a_region_are_in_its_dtype() -> None:
    x = torch.randn(8, 64)
    autocast, plain = TorchFLOPsByFX(LinearInBfloat16()), TorchFLOPsByFX(nn.Linear(64, 32))
    autocast.propagate(x, backward=True)
    plain.propagate(x, backward=True)
    # addmm saves its input for the weight gradient: the bfloat16 copy autocast made (the weight's copy is
    # not saved: the input needs no gradient); the add saves nothing
    assert autocast.training_memory().saved_activation_bytes == 8 * 64 * BF16  # 1,024
    assert plain.training_memory().saved_activation_bytes == 8 * 64 * FP32
    # backward FLOPs do not depend on the dtype: the layer's weight and bias gradients, then the shift's
    grad_weight, grad_bias, grad_shift = 32 * 64 * (2 * 8 - 1), 32 * (8 - 1), 32 * (8 - 1)
    assert by_name(autocast)["fc"].backward_flops == grad_weight + grad_bias
    assert autocast.total_backward_flops == grad_weight + grad_bias + grad_shift


def test_autocast_around_propagate_applies_to_the_run_and_the_cached_graph_runs_float32_after() -> None:
    model, x = nn.Sequential(nn.Linear(64, 32), nn.ReLU()), torch.randn(8, 64)
    counter = TorchFLOPsByFX(model)
    graph = counter.graph_model
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, expected = counter.propagate(x), model(x)
    assert output.dtype == torch.bfloat16 and torch.equal(output, expected)
    assert [r.written_bytes for r in counter.records if r.op == "call_module"] == [8 * 32 * BF16, 8 * 32 * BF16]
    output = counter.propagate(x)
    assert counter.graph_model is graph  # the same graph, run without autocast
    assert output.dtype == torch.float32 and torch.equal(output, model(x))
    assert [r.written_bytes for r in counter.records if r.op == "call_module"] == [8 * 32 * FP32, 8 * 32 * FP32]


def test_a_graph_traced_inside_autocast_holds_only_the_model_s_own_regions() -> None:
    x = torch.randn(8, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the same state as the model's own region
        own, plain = TorchFLOPsByFX(LinearInBfloat16()), TorchFLOPsByFX(nn.Sequential(nn.Linear(64, 32)))
        own.propagate(x)
        plain.propagate(x)  # traced here (the graphs are cached for these inputs)
    graphs = own.graph_model, plain.graph_model
    own.propagate(x)
    plain.propagate(x)
    assert (own.graph_model, plain.graph_model) == graphs
    assert by_name(own)["fc"].written_bytes == 8 * 32 * BF16
    assert by_name(plain)["_0"].written_bytes == 8 * 32 * FP32


def test_a_region_of_the_model_overrides_the_dtype_around_the_run() -> None:
    model, x = LinearInBfloat16(), torch.randn(8, 64)
    counter = TorchFLOPsByFX(model)
    with torch.autocast("cpu", dtype=torch.float16):
        output, expected = counter.propagate(x), model(x)
    with torch.autocast("cpu", dtype=torch.float16):
        in_float16 = model.fc(x) + model.shift  # the layer as the float16 region around the run alone would run it
    assert torch.equal(output, expected) and not torch.equal(output, in_float16)  # the layer ran in bfloat16


def test_a_region_switched_off_inside_an_enabled_one_runs_in_float32() -> None:
    model, x = NestedOff(), torch.randn(8, 64)
    counter = TorchFLOPsByFX(model)
    output = counter.propagate(x)
    expected = model(x)
    assert output.dtype == expected.dtype == torch.bfloat16 and torch.equal(output, expected)
    written = {name: record.written_bytes for name, record in by_name(counter).items() if record.op != "placeholder"}
    assert written == {
        "fc1": 8 * 32 * BF16,
        "float_1": 8 * 32 * FP32,  # y.float(), inside the switched-off region
        "fc2": 8 * 32 * FP32,
        "fc3": 8 * 16 * BF16,
        "output": 0,
    }
    fc2_flops = 8 * 32 * (2 * 32 - 1) + 8 * 32
    fc3_flops = 8 * 16 * (2 * 32 - 1) + 8 * 16
    assert counter.total_flops == FC_FLOPS + fc2_flops + fc3_flops


def test_a_leaf_inside_a_region_runs_its_calls_in_the_region() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(64, 32), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.block(x)

    model, x = Outer(), torch.randn(8, 64)
    counter = TorchFLOPsByFX(model, leaf_modules=["block"])
    output = counter.propagate(x)
    assert output.dtype == torch.bfloat16 and torch.equal(output, model(x))
    calls = [r for r in counter.records if r.leaf_node == "block"]
    assert [r.flops for r in calls] == [FC_FLOPS, 8 * 32]  # the linear layer's call, the relu's
    assert [r.written_bytes for r in calls] == [8 * 32 * BF16, 8 * 32 * BF16]


def test_a_shape_only_run_counts_a_region_in_its_inputs_dtypes_and_says_so() -> None:
    model, x = LinearInBfloat16(), torch.randn(8, 64)
    counter = TorchFLOPsByFX(model)
    counter.propagate(x)
    real = counter.records
    with pytest.warns(UserWarning, match=r"1 nodes run inside torch\.autocast regions of forward \(fc\)"):
        output = counter.propagate_shapes(x)
    # PyTorch casts no meta tensor: the layer writes float32, as the model on meta would
    assert output.device.type == "meta" and output.dtype == torch.float32 and output.shape == (8, 32)
    assert [r.flops for r in counter.records] == [r.flops for r in real]
    assert by_name(counter)["fc"].written_bytes == 8 * 32 * FP32
    with pytest.warns(UserWarning, match="autocast"):
        counter.propagate_shapes(x, backward=True)
    assert counter.training_memory().saved_activation_bytes == 8 * 64 * FP32
