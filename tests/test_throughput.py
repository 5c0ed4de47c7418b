"""Achieved throughput, % of peak, bound, MFU and the table of peaks: hand-computed on records with
fixed times (no GPU, no mocking)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from torch_flops import TorchFLOPsByFX, throughput
from torch_flops.aggregate import by_module, by_op_type
from torch_flops.peaks import GPU_PEAKS, UNKNOWN_DEVICE_HINT, check_peaks, match_device, run_dtype_key
from torch_flops.records import NodeRecord, Status


def record(name: str, flops: int, read: int, written: int, time_ms: float | None, path: str = "block",
           op: str = "call_function", target: str = "torch.matmul") -> NodeRecord:
    return NodeRecord(name, op, target, path, "Block", Status.RULE, flops, 0, ((1,),), ((1,),), time_ms=time_ms,
                      read_bytes=read, written_bytes=written)


# big: 2e9 FLOPs, 3e6 + 1e6 bytes in 1 ms; small: 1e6 FLOPs, 1e6 bytes in 0.5 ms
RECORDS = [
    NodeRecord("x", "placeholder", "x", "", "", Status.ZERO, 0, 0, (), ((1,),), time_ms=0.0),
    record("big", 2_000_000_000, 3_000_000, 1_000_000, 1.0),
    record("small", 1_000_000, 600_000, 400_000, 0.5, path="head", target="torch.add"),
]
PEAK_TFLOPS, PEAK_GBPS = 10.0, 100.0  # ridge 1000 * 10 / 100 = 100 FLOPs/B


def test_node_throughput_by_hand() -> None:
    _, big, small = throughput.for_nodes(RECORDS, PEAK_TFLOPS, PEAK_GBPS)
    # 2e9 / (1 ms * 1e9) = 2 TFLOP/s; 4e6 / (1 * 1e6) = 4 GB/s; 2e9 / 4e6 = 500 FLOPs/B >= 100: compute
    assert (big.tflops, big.gbps, big.intensity, big.peak_fraction, big.bound) == (2.0, 4.0, 500.0, 0.2, "compute")
    # 1e6 / (0.5 * 1e9) = 0.002 TFLOP/s; 1e6 / (0.5 * 1e6) = 2 GB/s; intensity 1 < 100: memory; 0.002 / 10
    assert (small.tflops, small.gbps, small.intensity, small.bound) == (0.002, 2.0, 1.0, "memory")
    assert math.isclose(small.peak_fraction, 0.0002)
    assert throughput.ridge_point(PEAK_TFLOPS, PEAK_GBPS) == 100.0


def test_no_time_or_no_peaks() -> None:
    assert throughput.throughput(10, 10, None) is None and throughput.throughput(10, 10, 0.0) is None
    t = throughput.throughput(2_000_000_000, 4_000_000, 1.0)  # no peaks: rates only
    assert (t.tflops, t.gbps, t.peak_fraction, t.bound) == (2.0, 4.0, None, None)
    assert throughput.throughput(5, 0, 1.0).intensity is None  # nothing moved: no intensity, no bound


def test_mfu_of_the_forward() -> None:
    peaks = check_peaks({"fp32": PEAK_TFLOPS}, PEAK_GBPS)
    run = throughput.summary(RECORDS, peaks, "fp32")
    # (2e9 + 1e6) FLOPs / (1.5 ms * 1e9) = 1.334 TFLOP/s; / 10 TFLOP/s = MFU 0.1334; 5e6 B / 1.5e6 = 3.333 GB/s
    assert run.flops == 2_001_000_000 and run.moved_bytes == 5_000_000 and run.time_ms == 1.5
    assert math.isclose(run.tflops, 1.334) and math.isclose(run.mfu, 0.1334) and math.isclose(run.gbps, 5 / 1.5)
    missing = throughput.summary(RECORDS, peaks, "bf16")  # a peak for fp32 only
    assert missing.mfu is None and "no figure for bf16" in missing.message


def test_modules_and_op_types_sum_bytes() -> None:
    modules = by_module(RECORDS, "Net")
    rates = {row.path: t for row, t in zip(modules, throughput.for_modules(modules, RECORDS, PEAK_TFLOPS, PEAK_GBPS))}
    # root: 2.001e9 FLOPs, 5e6 B, 1.5 ms -> 1.334 TFLOP/s, intensity 400.2
    assert math.isclose(rates[""].tflops, 1.334) and math.isclose(rates[""].intensity, 400.2)
    assert rates["head"].bound == "memory" and rates["block"].bound == "compute"
    ops = by_op_type(RECORDS)
    op_rates = dict(zip((row.op_type for row in ops), throughput.for_op_types(ops, RECORDS)))
    assert op_rates["torch.matmul"].gbps == 4.0 and op_rates["torch.add"].gbps == 2.0


def test_peaks_are_validated() -> None:
    assert check_peaks(None, None) is None
    assert check_peaks(312, 2039).tflops_for("bf16") == 312.0  # one number: the run's dtype, whatever it is
    by_dtype = check_peaks({torch.bfloat16: 989.5, "fp32": 67}, None)
    assert by_dtype.tflops == {"bf16": 989.5, "fp32": 67.0} and by_dtype.tflops_for("fp8") is None
    for bad in (0, -1, float("nan"), float("inf"), True, "312"):
        with pytest.raises(ValueError, match="positive number"):
            check_peaks(bad, None)
    with pytest.raises(ValueError, match="positive number"):
        check_peaks(None, -5)
    with pytest.raises(ValueError, match="unknown dtype"):
        check_peaks({"fp7": 1.0}, None)
    with pytest.raises(ValueError, match="unknown dtype"):
        TorchFLOPsByFX(nn.Linear(2, 2), peak_tflops={torch.int64: 1.0})


@pytest.mark.parametrize("name, memory, key", [
    ("NVIDIA H100 80GB HBM3", None, "h100-sxm"), ("NVIDIA H100 PCIe", None, "h100-pcie"), ("NVIDIA H200", None, "h200-sxm"),
    ("NVIDIA H100 NVL", None, None), ("NVIDIA H200 NVL", None, None),
    ("NVIDIA A100-SXM4-40GB", None, "a100-40gb"), ("NVIDIA A100-PCIE-40GB", None, "a100-40gb"),
    ("NVIDIA A100-SXM4-80GB", None, "a100-sxm-80gb"), ("NVIDIA A100 80GB PCIe", None, "a100-pcie-80gb"),
    ("NVIDIA A100-SXM4", 85_000_000_000, "a100-sxm-80gb"), ("NVIDIA A100", 85_000_000_000, None),
    ("NVIDIA A10", None, "a10"), ("NVIDIA A10G", None, None), ("NVIDIA L4", None, "l4"), ("NVIDIA L40S", None, "l40s"),
    ("Tesla T4", None, "t4"), ("Tesla V100-SXM2-16GB", None, "v100-sxm2"), ("Tesla V100-PCIE-32GB", None, "v100-pcie"),
    ("Tesla V100S-PCIE-32GB", None, None), ("NVIDIA GeForce RTX 4090", None, "rtx-4090"),
    ("NVIDIA GeForce RTX 3090 Ti", None, None), ("NVIDIA GeForce RTX 5090", None, "rtx-5090"),
    ("AMD Instinct MI300X", None, "mi300x"), ("Some Future GPU", None, None),
])
def test_device_names(name: str, memory: int | None, key: str | None) -> None:
    assert match_device(name, memory) == key


def test_table_is_dense_and_positive() -> None:
    for peaks in GPU_PEAKS.values():
        assert all(v > 0 for v in peaks.tflops.values()) and (peaks.bandwidth_gbps is None or peaks.bandwidth_gbps > 0)
    h100 = GPU_PEAKS["h100-sxm"]
    # datasheet 1,979 TFLOPS bf16 "with sparsity": dense is half
    assert h100.tflops["bf16"] == 989.5 and h100.bandwidth_gbps == 3350.0


def test_run_dtype_key() -> None:
    assert run_dtype_key([torch.int64, torch.bfloat16]) == "bf16"
    assert run_dtype_key([torch.float32], torch.device("cpu")) == "fp32"
    assert run_dtype_key([torch.int64]) is None


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * 2


def test_counter_on_cpu_with_given_peaks() -> None:
    counter = TorchFLOPsByFX(Scaled(), peak_tflops={"fp32": 0.001}, peak_bandwidth=1.0)
    counter.propagate(torch.randn(2, 8))
    records = [r for r in counter.records if r.op not in ("placeholder", "output")]
    run = counter.throughput_summary()
    # the formulas over the run's own times: total FLOPs / summed time
    time_ms = sum(r.time_ms for r in counter.records)
    assert run.dtype_key == "fp32" and run.peak_tflops == 0.001
    assert math.isclose(run.tflops, counter.total_flops / (time_ms * 1e9))
    assert math.isclose(run.mfu, run.tflops / 0.001)
    # Linear(8, 4) on (2, 8): 8 * 15 + 8 = 128 FLOPs; reads 2*8*4 + (32 + 4)*4 B, writes 2*4*4 B
    fc = next(r for r in records if r.target == "fc")
    assert (fc.flops, fc.read_bytes, fc.written_bytes) == (128, 208, 32)
    text = counter.report("nodes")
    assert "TFLOP/s" in text and "% of peak" in text and "Bound" in text
    document = json.loads(counter.report("ops", "json"))
    linear = next(row for row in document["rows"] if row["op_type"] == "nn.Linear")
    assert math.isclose(linear["flops_per_byte"], 128 / 240) and linear["bound"] == "memory"  # ridge 1 FLOPs/B
    assert document["throughput"]["mfu"] == run.mfu


def test_no_peaks_no_percentage_and_a_message() -> None:
    counter = TorchFLOPsByFX(Scaled())
    counter.propagate(torch.randn(2, 8))
    run = counter.throughput_summary()
    assert run.mfu is None and run.message == UNKNOWN_DEVICE_HINT and run.tflops > 0
    text = counter.report("ops")
    assert "TFLOP/s" in text and "% of peak" not in text
    counter.propagate(torch.randn(2, 8), timing=False)
    assert "TFLOP/s" not in counter.report("ops")  # no time, no rates


def test_roofline_png_on_cpu(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    counter = TorchFLOPsByFX(Scaled(), peak_tflops=0.001, peak_bandwidth=1.0)
    counter.propagate(torch.randn(2, 8))
    path = tmp_path / "roofline.png"
    counter.plot_roofline(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    counter.propagate(torch.randn(2, 8), timing=False)
    with pytest.raises(ValueError, match="no node has a time"):
        counter.plot_roofline(tmp_path / "none.png")


def test_cli_peaks_plot_and_summary(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    from torch_flops import cli

    factory = tmp_path / "nets.py"
    factory.write_text("from torch import nn\ndef make():\n    return nn.Sequential(nn.Linear(8, 4))\n")
    plot = tmp_path / "r.png"
    code = cli.main([f"{factory}:make", "--input-shape", "2,8", "--peak-tflops", "fp32=0.001", "--peak-bandwidth", "1",
                     "--plot", str(plot), "--view", "ops"])
    out = capsys.readouterr().out
    assert code == 0 and plot.is_file() and "% of peak" in out and "MFU" in out and "(fp32, peaks you gave)" in out
    assert cli.main([f"{factory}:make", "--input-shape", "2,8", "--peak-tflops", "-3"]) == 2
    assert "positive number" in capsys.readouterr().err
    assert cli.main([f"{factory}:make", "--input-shape", "2,8"]) == 0
    assert "no % of peak" in capsys.readouterr().out


CALLS: list[str] = []


def counted_relu(x: torch.Tensor) -> torch.Tensor:
    CALLS.append(x.device.type)  # a helper function: one node, run once per graph run
    return torch.relu(x)


torch.fx.wrap("counted_relu")


class Counted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return counted_relu(self.fc(x))


def test_warmup_default_is_none_on_cpu() -> None:
    # CPU: warmup=None means 0, as before: one graph run
    counter = TorchFLOPsByFX(Counted())
    CALLS.clear()
    counter.propagate(torch.randn(2, 4))
    assert CALLS == ["cpu"] and counter.plain_forward_ms is None
    CALLS.clear()
    counter.propagate(torch.randn(2, 4), warmup=2)  # the caller's run + 2 warm-up runs + 1 timed run
    assert CALLS == ["cpu"] * 4


@pytest.mark.cuda
def test_warmup_default_on_cuda(cuda_device: torch.device) -> None:
    counter = TorchFLOPsByFX(Counted().to(cuda_device))
    CALLS.clear()
    counter.propagate(torch.randn(2, 4, device=cuda_device))
    assert CALLS == ["cuda"] * 4  # the caller's run, 2 warm-up runs, 1 timed run: no cold time reported
    CALLS.clear()
    counter.propagate(torch.randn(2, 4, device=cuda_device), timing=False)
    assert CALLS == ["cuda"]  # FLOPs only: nothing timed, nothing to warm up
