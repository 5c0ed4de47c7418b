"""Upsampling and interpolation: ``F.interpolate``, ``F.upsample*``, ``nn.Upsample*`` and their aten ops.

Each output element of an interpolating mode is a weighted sum of ``points`` input elements:
``points`` multiplies and ``points - 1`` adds, so ``2 * points - 1`` FLOPs and ``points`` MACs per
output. The weights themselves (computed once per output coordinate) are not counted.

- nearest, nearest-exact: a copy, 0;
- linear (3-D input): 2 points, 3 FLOPs and 2 MACs per output;
- bilinear (4-D): 2 * 2 = 4 points, 7 FLOPs and 4 MACs;
- trilinear (5-D): 2 * 2 * 2 = 8 points, 15 FLOPs and 8 MACs;
- bicubic (4-D): 4 * 4 = 16 points, 31 FLOPs and 16 MACs;
- area: adaptive average pooling, priced by ``rules/pool.py`` (the exact windows, FLOPs = MACs);
- ``antialias=True`` (bilinear, bicubic, lanczos; 4-D): the product of the per-dimension windows
  PyTorch computes (below).

``align_corners`` and the scale do not change the count of the non-antialiased modes: every output
reads its 2 (linear) or 4 (cubic) neighbours per dimension, clamped at the border.

Nearest is a copy. The aten nearest ops, ``F.upsample_nearest`` and ``nn.UpsamplingNearest2d`` are
always nearest and are registered as known zero (status ``known-zero``); ``F.interpolate``,
``F.upsample`` and ``nn.Upsample`` only know their mode at run time, so their rule returns 0 for a
nearest mode (status ``rule``, 0 FLOPs).

Antialiasing (``_upsample_bilinear2d_aa``, ``_upsample_bicubic2d_aa``, ``_upsample_lanczos2d_aa``):
the filter (triangle, Keys cubic, Lanczos-3: ``interp_size`` 2, 4, 6) is stretched by the scale when
downsampling. Along one dimension PyTorch gives output ``i`` the window
``support = interp_size / 2 * max(scale, 1)``, ``center = scale * (i + 0.5)``,
``xmin = max(int(center - support + 0.5), 0)``, ``xsize = min(int(center + support + 0.5), in) - xmin``
(``scale = in / out``, or ``1 / scale_factor`` when a scale factor reaches the op; ``(in - 1) /
(out - 1)`` with ``align_corners``), evaluated in float32 for float32 inputs. An output reads the
product of its windows, ``points = xsize_h(i) * xsize_w(j)``; summed over one plane that is
``2 * Sh * Sw - out_h * out_w`` FLOPs and ``Sh * Sw`` MACs, with ``Sh``, ``Sw`` the sums of the window
sizes. (PyTorch's CPU kernel evaluates the same weighted sum separably, one dimension at a time, and
skips a dimension whose size does not change; the count is of the weighted sum itself, like the
non-antialiased modes.)

Worked examples:

- ``nn.Upsample(scale_factor=2, mode="bilinear")`` on ``(1, 3, 4, 4)`` -> ``(1, 3, 8, 8)``:
  192 outputs * 7 = 1,344 FLOPs, 192 * 4 = 768 MACs.
- ``F.interpolate(x, size=(2, 2), mode="bilinear", antialias=True)`` on ``(1, 1, 4, 4)``: scale 2,
  support 2; output 0: center 1, window [int(-0.5) -> 0, int(3.5) = 3), 3 taps; output 1: center 3,
  window [int(1.5) = 1, min(int(5.5), 4) = 4), 3 taps; so 3 * 3 = 9 points per output,
  4 * (2*9 - 1) = 68 FLOPs, 4 * 9 = 36 MACs.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torch_flops.records import ZERO_COST, Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, first_output, function_rule, module_rule, numel, prod
from torch_flops.rules.pool import adaptive_pool_windows

# neighbours read per spatial dimension by an interpolating mode, without antialiasing
POINTS_PER_DIM = {"linear": 2, "bilinear": 2, "trilinear": 2, "bicubic": 4}
# filter width (PyTorch's ``interp_size``) of the antialiased modes
ANTIALIAS_INTERP_SIZE = {"bilinear": 2, "bicubic": 4, "lanczos": 6}
NEAREST_MODES = ("nearest", "nearest-exact")


# -- shape-only formulas -------------------------------------------------------------------------------
def interpolation_cost(out_numel: int, points: int) -> Cost:
    """A weighted sum of ``points`` inputs per output: ``out_numel * (2 * points - 1)`` FLOPs,
    ``out_numel * points`` MACs."""
    return Cost(out_numel * (2 * points - 1), out_numel * points)


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32, as a C++ ``float`` variable would hold it."""
    return struct.unpack("f", struct.pack("f", value))[0]


def antialias_windows(
    in_size: int,
    out_size: int,
    interp_size: int,
    align_corners: bool = False,
    scale_factor: float | None = None,
    single_precision: bool = True,
) -> list[int]:
    """The number of input taps of each of the ``out_size`` outputs of an antialiased resize along one
    dimension: PyTorch's ``xsize`` (``HelperInterpBase::_compute_indices_min_size_weights_aa`` on CPU,
    ``_compute_weights_span`` on CUDA).

    ``scale = (in - 1) / (out - 1)`` (0 for one output) with ``align_corners``, else
    ``1 / scale_factor`` when a positive scale factor reached the op, else ``in / out``;
    ``support = interp_size / 2 * scale`` when ``scale >= 1`` (downsampling), else ``interp_size / 2``;
    for output ``i``: ``center = scale * (i + 0.5)``,
    ``xmin = max(trunc(center - support + 0.5), 0)``,
    ``xsize = min(trunc(center + support + 0.5), in_size) - xmin``, clamped to
    ``[0, 2 * ceil(support) + 1]``. ``single_precision`` evaluates ``scale``, ``support``,
    ``center`` and ``center -/+ support`` in float32, as PyTorch does for float32 inputs (float64 and
    uint8 inputs use double).
    """
    rnd = _float32 if single_precision else float
    if align_corners:
        scale = rnd((in_size - 1) / (out_size - 1)) if out_size > 1 else 0.0
    elif scale_factor is not None and scale_factor > 0:
        scale = rnd(1.0 / scale_factor)
    else:
        scale = rnd(in_size / out_size)
    support = rnd(interp_size * 0.5 * scale) if scale >= 1.0 else rnd(interp_size * 0.5)
    max_interp_size = math.ceil(support) * 2 + 1
    windows = []
    for i in range(out_size):
        center = rnd(scale * (i + 0.5))
        xmin = max(int(rnd(center - support) + 0.5), 0)
        xsize = min(int(rnd(center + support) + 0.5), in_size) - xmin
        windows.append(min(max(xsize, 0), max_interp_size))
    return windows


def antialias_cost(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    interp_size: int,
    align_corners: bool = False,
    scale_factors: Sequence[float | None] | None = None,
    single_precision: bool = True,
) -> Cost:
    """An antialiased resize of the trailing ``len(input_shape) - 2`` dimensions. Output
    ``(i, j, ...)`` reads ``points = w_0(i) * w_1(j) * ...`` inputs (:func:`antialias_windows`), so one
    plane costs ``2 * prod(S_d) - prod(out_d)`` FLOPs and ``prod(S_d)`` MACs with ``S_d`` the sum of
    dimension ``d``'s windows; times the ``N * C`` planes."""
    spatial = len(output_shape) - 2
    scale_factors = list(scale_factors) if scale_factors is not None else [None] * spatial
    window_sums = [
        sum(antialias_windows(size_in, size_out, interp_size, align_corners, factor, single_precision))
        for size_in, size_out, factor in zip(input_shape[2:], output_shape[2:], scale_factors)
    ]
    planes = prod(output_shape[:2])
    points = planes * prod(window_sums)
    return Cost(max(2 * points - prod(output_shape), 0), points)


def area_cost(input_shape: Sequence[int], output_shape: Sequence[int]) -> Cost:
    """``mode="area"`` is adaptive average pooling: the sum of PyTorch's exact adaptive windows, FLOPs
    and MACs alike (:func:`torch_flops.rules.pool.adaptive_pool_windows`)."""
    windows, _ = adaptive_pool_windows(input_shape, output_shape, len(output_shape) - 2)
    return Cost(windows, windows)


def _single_precision(x: torch.Tensor) -> bool:
    """PyTorch computes antialiasing windows in double for float64 (and uint8) inputs, else float32."""
    return x.dtype not in (torch.float64, torch.uint8)


def resample_cost(
    x: torch.Tensor,
    output: torch.Tensor,
    mode: str,
    align_corners: bool | None = None,
    scale_factor: float | Sequence[float] | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Cost:
    """The cost of ``F.interpolate(x, ..., mode=mode, ...)`` that returned ``output``."""
    if mode in NEAREST_MODES:
        return ZERO_COST
    if mode == "area":
        return area_cost(x.shape, output.shape)
    spatial = output.dim() - 2
    if antialias or mode == "lanczos":
        if mode not in ANTIALIAS_INTERP_SIZE:
            raise ValueError(f"no antialiased interpolation for mode {mode!r}")
        # F.interpolate passes the scale factors on to the op unless it recomputes them from the size
        factors = None
        if scale_factor is not None and not recompute_scale_factor:
            factors = list(scale_factor) if isinstance(scale_factor, (list, tuple)) else [scale_factor] * spatial
        return antialias_cost(
            x.shape, output.shape, ANTIALIAS_INTERP_SIZE[mode], bool(align_corners), factors, _single_precision(x)
        )
    if mode not in POINTS_PER_DIM:
        raise ValueError(f"unknown interpolation mode {mode!r}")
    return interpolation_cost(numel(output), POINTS_PER_DIM[mode] ** spatial)


# -- FX adapters ---------------------------------------------------------------------------------------
# [N, C, *out] = F.interpolate([N, C, *in], size=None, scale_factor=None, mode="nearest",
#                              align_corners=None, recompute_scale_factor=None, antialias=False)
# F.upsample(input, size, scale_factor, mode, align_corners) shares the leading arguments.
@function_rule(F.interpolate, F.upsample)
def interpolate_function(call: OpCall) -> Cost:
    return resample_cost(
        call.arg(0, "input"),
        call.output,
        call.arg(3, "mode", "nearest"),
        call.arg(4, "align_corners", None),
        call.arg(2, "scale_factor", None),
        call.arg(5, "recompute_scale_factor", None),
        call.arg(6, "antialias", False),
    )


# [N, C, *out] = F.upsample_bilinear([N, C, H, W], size=None, scale_factor=None): align_corners=True
@function_rule(F.upsample_bilinear)
def upsample_bilinear_function(call: OpCall) -> Cost:
    return resample_cost(call.arg(0, "input"), call.output, "bilinear", True, call.arg(2, "scale_factor", None))


# [N, C, *out] = nn.Upsample(size, scale_factor, mode, align_corners, recompute_scale_factor)([N, C, *in]);
# nn.UpsamplingBilinear2d is an Upsample(mode="bilinear", align_corners=True)
@module_rule(nn.Upsample)
def upsample_module(call: OpCall) -> Cost:
    module = call.module
    return resample_cost(
        call.arg(0, "input"),
        call.output,
        module.mode,
        module.align_corners,
        module.scale_factor,
        module.recompute_scale_factor,
        getattr(module, "antialias", False),
    )


# nearest only: a copy
@module_rule(nn.UpsamplingNearest2d, known_zero=True)
@function_rule(F.upsample_nearest, known_zero=True)
@aten_rule(
    *aten_ops(
        "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
        "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
    ),
    known_zero=True,
)
def nearest_copy(call: OpCall) -> Cost:
    """Known zero: nearest-neighbour resampling copies one input element per output."""
    return ZERO_COST


# -- aten adapters -------------------------------------------------------------------------------------
# every overload (.default and .vec) of each op; the nearest ops are known zero above
INTERPOLATION_ATEN = {
    "upsample_linear1d": 2, "upsample_bilinear2d": 2, "upsample_trilinear3d": 2, "upsample_bicubic2d": 4,
}
ANTIALIAS_ATEN = {"_upsample_bilinear2d_aa": 2, "_upsample_bicubic2d_aa": 4, "_upsample_lanczos2d_aa": 6}


def _aten_interpolation_rule(name: str, points_per_dim: int):
    # [N, C, *out] = upsample_<mode>(self, output_size, align_corners, scales...)  (.vec: scale_factors)
    def rule(call: OpCall) -> Cost:
        output = first_output(call.output)
        return interpolation_cost(numel(output), points_per_dim ** (output.dim() - 2))

    rule.__qualname__ = f"{name}_aten"
    return rule


def _aten_antialias_rule(name: str, interp_size: int):
    # .default: (self, output_size, align_corners, scales_h=None, scales_w=None)
    # .vec:     (input, output_size, align_corners, scale_factors)
    def rule(call: OpCall) -> Cost:
        x = call.arg(0, "input") if "input" in call.kwargs else call.arg(0, "self")
        align_corners = bool(call.arg(2, "align_corners", False))
        if "scale_factors" in call.kwargs or (len(call.args) > 3 and isinstance(call.args[3], (list, tuple))):
            factors = call.arg(3, "scale_factors", None)
        else:
            factors = [call.arg(3, "scales_h", None), call.arg(4, "scales_w", None)]
        return antialias_cost(x.shape, call.output.shape, interp_size, align_corners, factors, _single_precision(x))

    rule.__qualname__ = f"{name}_aten"
    return rule


def _register_aten() -> None:
    for name, points_per_dim in INTERPOLATION_ATEN.items():
        aten_rule(*aten_ops(name))(_aten_interpolation_rule(name, points_per_dim))
    for name, interp_size in ANTIALIAS_ATEN.items():  # aten_ops skips _upsample_lanczos2d_aa on older PyTorch
        aten_rule(*aten_ops(name))(_aten_antialias_rule(name, interp_size))


_register_aten()
