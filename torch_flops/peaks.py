"""Dense peak throughput and memory bandwidth of common accelerators, and the device's own.

A :class:`Peaks` holds a device's dense (not 2:4 sparse) peak TFLOP/s per dtype key (``fp64``, ``fp32``,
``tf32``, ``fp16``, ``bf16``, ``fp8``, ``int8``; ``int8`` in TOP/s) and its memory bandwidth in GB/s
(10**9 bytes per second). :data:`GPU_PEAKS` is the table shipped with the package; every figure in it
has its source in ``docs/peaks.md``, and a figure no source gave is absent (``None``), never guessed.

:func:`detect` matches a CUDA device's name (and, where the name leaves it open, its memory size) to
the table; an unknown device gives ``None`` and :data:`UNKNOWN_DEVICE_HINT` says how to pass peaks
(``TorchFLOPsByFX(model, peak_tflops=..., peak_bandwidth=...)``), on any device, CPU included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

DTYPE_KEYS = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8")
_TORCH_DTYPE_KEYS: dict[torch.dtype, str] = {
    torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "int8",
    **{getattr(torch, name): "fp8" for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
       if hasattr(torch, name)},
}
UNKNOWN_DEVICE_HINT = (
    "no % of peak: the device's peaks are not known; pass them, e.g. "
    "TorchFLOPsByFX(model, peak_tflops={'bf16': 989.5, 'fp32': 67.0}, peak_bandwidth=3350) "
    "(dense TFLOP/s, GB/s), or --peak-tflops / --peak-bandwidth on the command line"
)


@dataclass(frozen=True)
class Peaks:
    """A device's dense peak TFLOP/s by dtype key and memory bandwidth in GB/s (``None``: not known).

    ``any_dtype_tflops`` is a single peak given for whatever dtype the run uses (``peak_tflops=312``)."""

    name: str
    tflops: Mapping[str, float] = field(default_factory=dict)
    bandwidth_gbps: float | None = None
    any_dtype_tflops: float | None = None

    def tflops_for(self, dtype_key: str | None) -> float | None:
        """The peak for ``dtype_key`` (the single peak when one was given for any dtype), or ``None``."""
        if self.any_dtype_tflops is not None:
            return self.any_dtype_tflops
        return self.tflops.get(dtype_key) if dtype_key is not None else None


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def dtype_key(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16`` -> ``"bf16"``; a key of :data:`DTYPE_KEYS` is returned as it is."""
    if isinstance(dtype, str) and dtype in DTYPE_KEYS:
        return dtype
    if isinstance(dtype, torch.dtype) and dtype in _TORCH_DTYPE_KEYS:
        return _TORCH_DTYPE_KEYS[dtype]
    raise ValueError(f"unknown dtype {dtype!r} for a peak: use one of {DTYPE_KEYS} or a torch dtype among them")


def check_peaks(peak_tflops: Any, peak_bandwidth: Any, name: str = "peaks you gave") -> Peaks | None:
    """User peaks as :class:`Peaks`, validated: ``peak_tflops`` a positive number (for any dtype) or a dict
    ``{dtype: positive number}`` keyed by :data:`DTYPE_KEYS` or torch dtypes; ``peak_bandwidth`` a positive
    number of GB/s. ``None`` for both: ``None`` (the table is used on CUDA)."""
    if peak_tflops is None and peak_bandwidth is None:
        return None
    bandwidth = None if peak_bandwidth is None else _positive("peak_bandwidth (GB/s)", peak_bandwidth)
    if peak_tflops is None:
        return Peaks(name, {}, bandwidth)
    if isinstance(peak_tflops, Mapping):
        if not peak_tflops:
            raise ValueError("peak_tflops must name at least one dtype, e.g. {'bf16': 989.5}")
        by_key = {dtype_key(k): _positive(f"peak_tflops[{k!r}]", v) for k, v in peak_tflops.items()}
        return Peaks(name, by_key, bandwidth)
    return Peaks(name, {}, bandwidth, any_dtype_tflops=_positive("peak_tflops", peak_tflops))


def run_dtype_key(dtypes: list[torch.dtype], device: torch.device | None = None) -> str | None:
    """The dtype key whose peak applies to a run: the first floating dtype among ``dtypes`` (the model's
    parameters first, then its inputs). float32 on CUDA with TF32 matmuls allowed
    (``torch.backends.cuda.matmul.allow_tf32``) runs its products on tensor cores: ``"tf32"``."""
    for dtype in dtypes:
        if dtype.is_floating_point and dtype in _TORCH_DTYPE_KEYS:
            key = _TORCH_DTYPE_KEYS[dtype]
            if key == "fp32" and device is not None and device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
                return "tf32"
            return key
    return None


def _peaks(name: str, bandwidth_gbps: float | None, **tflops: float | None) -> Peaks:
    return Peaks(name, {k: v for k, v in tflops.items() if v is not None}, bandwidth_gbps)


# Dense figures. Where a datasheet gives tensor-core figures "with sparsity", the dense figure is half of
# it, as the datasheets' footnotes say. Sources, figure by figure: docs/peaks.md.
GPU_PEAKS: dict[str, Peaks] = {
    "h100-sxm": _peaks("NVIDIA H100 SXM", 3350.0, fp32=67.0, tf32=494.5, bf16=989.5, fp16=989.5, fp8=1979.0, int8=1979.0),
    "h100-pcie": _peaks("NVIDIA H100 PCIe", 2000.0, fp32=51.0, tf32=378.0, bf16=756.5, fp16=756.5, fp8=1513.0, int8=1513.0),
    "h200-sxm": _peaks("NVIDIA H200 SXM", 4800.0, fp32=66.91, bf16=989.5, fp16=989.5, fp8=1979.0, int8=1979.0),
    "a100-40gb": _peaks("NVIDIA A100 40GB", 1555.0, fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0, int8=624.0),
    "a100-pcie-80gb": _peaks("NVIDIA A100 80GB PCIe", 1935.0, fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0, int8=624.0),
    "a100-sxm-80gb": _peaks("NVIDIA A100 80GB SXM", 2039.0, fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0, int8=624.0),
    "l4": _peaks("NVIDIA L4", 300.0, fp32=30.29, tf32=60.0, bf16=121.0, fp16=121.0, fp8=242.5, int8=242.5),
    "l40s": _peaks("NVIDIA L40S", 864.0, fp32=91.6, tf32=183.0, bf16=362.05, fp16=362.05, fp8=733.0, int8=732.86),
    "a10": _peaks("NVIDIA A10", 600.0, fp32=31.24),
    "t4": _peaks("NVIDIA T4", 320.0, fp32=8.1, fp16=65.0, int8=130.0),
    "v100-sxm2": _peaks("NVIDIA V100 SXM2", 900.0, fp32=15.7, fp16=125.0),
    "v100-pcie": _peaks("NVIDIA V100 PCIe", 900.0, fp32=14.0, fp16=112.0),
    "rtx-3090": _peaks("NVIDIA GeForce RTX 3090", None, fp32=35.58),
    "rtx-4090": _peaks("NVIDIA GeForce RTX 4090", 1008.0, fp32=82.6, tf32=82.6, bf16=165.2, fp16=165.2, int8=660.6),
    "rtx-5090": _peaks("NVIDIA GeForce RTX 5090", 1792.0, fp32=104.8),
    "mi300x": _peaks("AMD Instinct MI300X", 5300.0, bf16=1307.4, fp16=1307.4, fp8=2614.9),
}

_GIB = 1024**3


def match_device(name: str, total_memory_bytes: int | None = None) -> str | None:
    """The key of :data:`GPU_PEAKS` for a device named ``name`` (``torch.cuda.get_device_name()``), or
    ``None`` when the name does not say which table entry it is (a variant with no sourced figures, such
    as H100 NVL or V100S, or an A100 80GB whose name gives no form factor). The memory size tells a
    40 GB A100 from an 80 GB one when the name does not."""
    upper = name.upper()
    words = set(re.findall(r"[A-Z0-9]+", upper))
    if "NVL" in words:
        return None  # H100 NVL, H200 NVL: no sourced figures (docs/peaks.md)
    if "H200" in words:
        return "h200-sxm"
    if "H100" in words:
        return "h100-pcie" if "PCIE" in words else "h100-sxm"
    if "A100" in words:
        big = "80GB" in words or (total_memory_bytes is not None and total_memory_bytes > 60 * _GIB)
        if not big:
            return "a100-40gb"  # SXM4 and PCIe 40 GB have the same figures
        return "a100-pcie-80gb" if "PCIE" in words else "a100-sxm-80gb" if "SXM4" in words or "SXM" in words else None
    if "V100" in words:
        return "v100-sxm2" if "SXM2" in words else "v100-pcie" if "PCIE" in words else None
    if "L40S" in words:
        return "l40s"
    if "L4" in words:
        return "l4"
    if "A10" in words:
        return "a10"  # not A10G, A100: other words
    if "T4" in words:
        return "t4"
    for model in ("3090", "4090", "5090"):
        if model in words and "RTX" in words and "TI" not in words and "D" not in words:
            return f"rtx-{model}"
    if "MI300X" in words:
        return "mi300x"
    return None


def detect(device: torch.device | str | None = None) -> Peaks | None:
    """The table's peaks for a CUDA (or ROCm) device, from its name and memory size; ``None`` for a CPU,
    a device not in the table, or one whose name leaves the entry open (see :func:`match_device`)."""
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(device)
    key = match_device(properties.name, properties.total_memory)
    return GPU_PEAKS.get(key) if key is not None else None
