"""Shape-only (meta) runs and analytic memory."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from features import needs_sdpa_gqa
from models import Op
from torch_flops import TorchFLOPsByFX, render
from torch_flops.engine import MemorySummary

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


@pytest.mark.parametrize("build", [torchvision.models.resnet50, lambda: timm.create_model("vit_base_patch16_224")],
                         ids=["resnet50", "vit_base_patch16_224"])
def test_meta_totals_equal_real_totals(build) -> None:
    model = build()
    counter = TorchFLOPsByFX(model)
    counter.propagate(torch.randn(1, 3, 224, 224))
    real = [(r.name, r.flops, r.macs, r.output_shapes) for r in counter.records]
    weight = next(model.parameters())
    pointer = weight.data_ptr()
    counter.propagate_shapes(input_shapes=[(1, 3, 224, 224)])
    assert [(r.name, r.flops, r.macs, r.output_shapes) for r in counter.records] == real
    assert counter.shape_only and all(r.time_ms is None for r in counter.records)
    # the real weights were neither copied nor moved
    assert next(model.parameters()) is weight and weight.device.type == "cpu" and weight.data_ptr() == pointer


def test_a_model_built_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = torchvision.models.resnet18()
    counter = TorchFLOPsByFX(model)
    out = counter.propagate(torch.empty(2, 3, 224, 224, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 1000)
    assert counter.total_flops == 2 * 3_640_289_280 and counter.total_macs == 2 * 1_824_034_280


def helper(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, -1) * 2


torch.fx.wrap("helper")


def test_fallback_runs_on_meta() -> None:
    model = Op(lambda x: helper(x))
    counter = TorchFLOPsByFX(model)
    counter.propagate_shapes(input_shapes=[(3, 4)])
    # cumsum: 3 lines * 3 adds; * 2: 12
    assert counter.total_flops == 9 + 12


class MLP(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.relu = nn.ReLU(inplace=inplace)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


@pytest.mark.parametrize("shape_only", [False, True])
def test_liveness_by_hand(shape_only: bool) -> None:
    counter = TorchFLOPsByFX(MLP())
    x = torch.randn(1, 4)
    counter.propagate_shapes(x) if shape_only else counter.propagate(x)
    # float32: x 16 B, fc1 32 B, relu 32 B (a new tensor), fc2 8 B; x lives to the end (the caller holds it)
    # while each node runs: x 16; x + fc1 48; x + fc1 + relu 80; x + relu + fc2 56; x + fc2 24
    # after each node: x 16; x + fc1 48; x + relu 48 (fc1 freed); x + fc2 24 (relu freed); 24
    assert [r.live_bytes for r in counter.records] == [16, 16 + 32, 16 + 32, 16 + 8, 16 + 8]
    assert [r.live_peak_bytes for r in counter.records] == [16, 16 + 32, 16 + 32 + 32, 16 + 32 + 8, 16 + 8]
    summary = counter.activation_memory()
    assert (summary.peak_activation_bytes, summary.peak_node) == (16 + 32 + 32, "relu")
    # in the CUDA allocator's blocks each of the three storages alive while relu runs is 512 B
    assert summary.allocator_peak_bytes == 3 * 512
    assert (summary.measured_peak_bytes, summary.measured_peak_node, summary.measured_inside_bytes) == (None, None, None)
    assert summary.params_bytes == (4 * 8 + 8 + 8 * 2 + 2) * 4 and summary.buffers_bytes == 0
    fc1 = counter.records[1]
    # reads x (16) and its weights (40 floats = 160); writes 32; 8 * (2*4 - 1) + 8 = 64 FLOPs
    assert (fc1.read_bytes, fc1.written_bytes) == (176, 32)
    assert fc1.arithmetic_intensity == pytest.approx(64 / 208)


def test_in_place_results_share_their_input_storage() -> None:
    counter = TorchFLOPsByFX(MLP(inplace=True))
    counter.propagate(torch.randn(1, 4))
    # relu writes into fc1's 32 B: x + fc1 48; x + relu 48; x + relu + fc2 56 is the peak
    assert counter.activation_memory().peak_activation_bytes == 16 + 32 + 8
    assert counter.activation_memory().peak_node == "fc2"


def test_the_inputs_stay_alive_as_the_caller_holds_them() -> None:
    """The case test_peak_activation_matches_cuda measures on a GPU (9,437,184 bytes above the model):
    x (1 MiB) is held by the caller while the first Linear's and the ReLU's outputs (4 MiB each) are
    alive at once."""
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024))
    counter = TorchFLOPsByFX(model)
    counter.propagate_shapes(input_shapes=[(256, 1024)])
    summary = counter.activation_memory()
    assert summary.peak_activation_bytes == (256 * 1024 + 2 * 256 * 4096) * 4  # 9,437,184
    assert summary.peak_node == "_1"


@needs_sdpa_gqa
def test_grouped_query_attention_is_counted_by_query_heads() -> None:
    q, k, v = torch.randn(1, 8, 4, 16), torch.randn(1, 2, 6, 16), torch.randn(1, 2, 6, 16)
    counter = TorchFLOPsByFX(Op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=True)))
    counter.propagate_shapes(q, k, v)
    # B = 8 query heads, L = 4, S = 6, E = 16: scores 8*4*6 * 31 = 5,952; scaling 192; softmax 32 * 17 = 544;
    # attention x V 8*4*16 * 11 = 5,632
    assert counter.total_flops == 5_952 + 192 + 544 + 5_632


@pytest.mark.cuda
def test_peak_activation_matches_cuda(cuda_device: torch.device) -> None:
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024)).to(cuda_device)
    x = torch.randn(256, 1024, device=cuda_device)
    counter = TorchFLOPsByFX(model)
    counter.propagate(x)
    analytic = counter.activation_memory().peak_activation_bytes
    torch.cuda.synchronize(cuda_device)
    torch.cuda.reset_peak_memory_stats(cuda_device)
    baseline = torch.cuda.memory_allocated(cuda_device)
    with torch.no_grad():
        model(x)
    measured = torch.cuda.max_memory_allocated(cuda_device) - baseline + x.numel() * 4
    assert abs(measured - analytic) <= 0.1 * analytic


@pytest.mark.cuda
def test_the_allocator_peak_per_node_equals_the_analytic_one_for_elementwise_ops(cuda_device: torch.device) -> None:
    """Elementwise ops allocate their outputs and nothing else, and 1024 x 1024 float32 tensors (4 MiB)
    are whole allocator blocks: measured and analytic agree exactly, node by node. The cache is emptied
    first: a cached free block up to 1 MiB larger than a request is handed out whole, not split."""
    gc.collect()
    torch.cuda.synchronize(cuda_device)
    torch.cuda.empty_cache()
    x = torch.randn(1024, 1024, device=cuda_device)
    counter = TorchFLOPsByFX(Elementwise())
    counter.propagate(x)
    nodes = [r for r in counter.records if r.op == "call_function" or r.op == "call_method"]
    assert [r.mem_peak_bytes for r in nodes] == [r.live_peak_bytes for r in nodes]
    assert [r.mem_inside_bytes for r in nodes] == [0] * len(nodes)
    summary = counter.activation_memory()
    # x, a = x * 2 and b = a + x alive while b runs: 3 * 4 MiB, in whole blocks
    assert summary.measured_peak_bytes == summary.allocator_peak_bytes == summary.peak_activation_bytes == 3 * 4 * 2**20
    assert summary.measured_inside_bytes == 0


class Elementwise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x * 2
        b = a + x
        return b.relu()


class Temporaries(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x * 2
        b = a * 3
        return b.sum()


class HasTemporaries(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Temporaries()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + 1


@pytest.mark.parametrize("shape_only", [False, True])
def test_temporaries_inside_a_leaf_count_toward_the_peak(shape_only: bool) -> None:
    counter = TorchFLOPsByFX(HasTemporaries(), leaf_modules=["inner"])
    x = torch.randn(1000)
    counter.propagate_shapes(x) if shape_only else counter.propagate(x)
    # x 4,000 B is alive; inside the leaf a (4,000) and b (4,000) are alive when the sum (4) is made
    summary = counter.activation_memory()
    assert (summary.peak_activation_bytes, summary.peak_node) == (4_000 + 8_004, "inner")


def test_the_allocator_peak_is_told_apart_from_the_analytic_one() -> None:
    summary = MemorySummary(peak_activation_bytes=600, peak_node="relu", params_bytes=232, buffers_bytes=0,
                            allocator_peak_bytes=1024, measured_peak_bytes=1300, measured_peak_node="conv",
                            measured_inside_bytes=200)
    # 1,300 = 600 + (1,024 - 600) blocks + 200 inside the op + 76 other
    assert render.activation_memory_text(summary).splitlines() == [
        "peak_activation_memory = 600 B (at node relu); parameters 232 B, buffers 0 B",
        "allocator peak = 1,300 B (at node conv) = analytic 600 + 512-byte blocks 424 + inside the op "
        "(workspaces, temporaries) 200 + other +76",
    ]
    cpu = MemorySummary(peak_activation_bytes=600, peak_node="relu", params_bytes=232, buffers_bytes=0)
    assert render.activation_memory_text(cpu) == "peak_activation_memory = 600 B (at node relu); parameters 232 B, buffers 0 B"
