"""Spatial sampling and torchvision's detection ops.

- ``F.grid_sample`` / ``aten.grid_sampler_2d|3d``: per output element, a weighted sum of its
  neighbours as in interpolation: bilinear ``2 * 4 - 1 = 7`` FLOPs and 4 MACs, trilinear (3-D
  "bilinear") 15 and 8, bicubic 31 and 16, nearest 0 (a copy). Unnormalising the grid is not counted.
- ``F.affine_grid`` (``aten.affine_grid_generator``): each grid point is its homogeneous coordinates
  times ``theta``'s rows, ``2`` dot products of 3 (``3`` of 4 in 3-D): ``out_numel * (2 * 3 - 1)``.
- ``torchvision.ops.roi_align``: every output element averages ``S`` bilinear samples: ``S * 7`` for
  the samples, ``S - 1`` adds and 1 divide, so ``8 S`` FLOPs (``4 S`` MACs), with ``S`` the number of
  samples of the output's bin: ``sampling_ratio ** 2``, or with ``sampling_ratio <= 0`` PyTorch's
  adaptive ``ceil(roi_h / pooled_h) * ceil(roi_w / pooled_w)`` read from the boxes themselves.
- ``torchvision.ops.roi_pool``: the max over each bin, ``bin_size - 1`` comparisons (read from the
  boxes).
- ``torchvision.ops.nms`` of ``n`` boxes, at its upper bound (the pairs it really compares depend on
  the data): sorting the scores ``(n - 1) * ceil(log2 n)``, the areas ``3n``, and 13 FLOPs for the
  IoU of every pair (2 max, 2 min, 2 subtract, 2 clamp, 1 multiply, 1 add, 1 subtract, 1 divide, 1
  compare): ``13 * n (n - 1) / 2``.

Worked example: ``roi_align`` to ``(7, 7)`` with ``sampling_ratio=2`` for 3 boxes of 256 channels:
3 * 256 * 49 outputs * 8 * 4 = 1,204,224 FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_flops.records import Cost
from torch_flops.registry import OpCall, aten_ops, aten_rule, first_output, function_rule, numel
from torch_flops.rules.linear import matmul_cost
from torch_flops.rules.selection import sort_cost

# interpolation_mode of grid_sample: 0 bilinear, 1 nearest, 2 bicubic
_GRID_POINTS = {0: 2, 1: 0, 2: 4}
_GRID_MODES = {"bilinear": 0, "nearest": 1, "bicubic": 2}


def weighted_sum_cost(out_numel: int, points: int) -> Cost:
    """``out_numel * (2 * points - 1)`` FLOPs, ``out_numel * points`` MACs (0 for a copy)."""
    if points == 0 or out_numel == 0:
        return Cost(0, 0)
    return Cost(out_numel * (2 * points - 1), out_numel * points)


def grid_sample_cost(out_numel: int, spatial_dims: int, mode: int) -> Cost:
    per_dim = _GRID_POINTS[mode]
    return weighted_sum_cost(out_numel, per_dim**spatial_dims if per_dim else 0)


# [N, C, *out] = F.grid_sample(input [N, C, *in], grid [N, *out, d], mode="bilinear", ...)
@function_rule(F.grid_sample)
def grid_sample(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    return grid_sample_cost(numel(call.output), input_.dim() - 2, _GRID_MODES[call.arg(2, "mode", "bilinear")])


# aten: grid_sampler_2d / _3d / grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners)
@aten_rule(*aten_ops("grid_sampler", "grid_sampler_2d", "grid_sampler_3d", "cudnn_grid_sampler"))
def grid_sampler_aten(call: OpCall) -> Cost:
    input_ = call.arg(0, "input")
    mode = call.arg(2, "interpolation_mode", 0) if len(call.args) > 2 else 0
    return grid_sample_cost(numel(call.output), input_.dim() - 2, mode)


# grid [N, H, W, 2] = affine_grid_generator(theta [N, 2, 3], size, align_corners): each point's
# (x, y, 1) times theta's rows, 2 dot products of 3; in 3-D 3 of 4
@aten_rule(*aten_ops("affine_grid_generator"))
def affine_grid(call: OpCall) -> Cost:
    theta = call.args[0]
    return matmul_cost(numel(call.output), theta.shape[-1])


def _bin_sizes(rois: torch.Tensor, scale: float, pooled: tuple[int, int], aligned: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per box: the height and width of one output bin, in input pixels (as torchvision computes them)."""
    offset = 0.5 if aligned else 0.0
    boxes = rois[:, 1:5].to(torch.float64) * scale - offset
    height, width = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    if not aligned:
        height, width = height.clamp(min=1.0), width.clamp(min=1.0)
    return height / pooled[0], width / pooled[1]


def roi_align_cost(out_numel: int, samples_per_bin: int) -> Cost:
    """``8 S`` FLOPs and ``4 S`` MACs per output element, ``S`` samples per bin."""
    return Cost(out_numel * 8 * samples_per_bin, out_numel * 4 * samples_per_bin)


# [K, C, ph, pw] = torchvision::roi_align(input, rois [K, 5], spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
@aten_rule("torchvision::roi_align")
def roi_align(call: OpCall) -> Cost:
    input_, rois = call.args[0], call.args[1]
    scale, ph, pw, ratio, aligned = call.args[2:7]
    per_box = numel(call.output) // max(rois.shape[0], 1)
    if ratio > 0:
        return roi_align_cost(numel(call.output), ratio * ratio)
    if rois.device.type == "meta" or rois.numel() == 0:
        raise ValueError("roi_align with adaptive sampling needs the boxes' values")
    bin_h, bin_w = _bin_sizes(rois, scale, (ph, pw), aligned)
    samples = (torch.ceil(bin_h).clamp(min=1) * torch.ceil(bin_w).clamp(min=1)).to(torch.int64)
    return roi_align_cost(per_box, int(samples.sum()))


# [K, C, ph, pw] = torchvision::roi_pool(input, rois, spatial_scale, pooled_height, pooled_width)
@aten_rule("torchvision::roi_pool")
def roi_pool(call: OpCall) -> Cost:
    input_, rois = call.args[0], call.args[1]
    scale, ph, pw = call.args[2:5]
    values = numel(first_output(call.output))
    per_box = values // max(rois.shape[0], 1)
    bin_h, bin_w = _bin_sizes(rois, scale, (ph, pw), aligned=False)
    window = (torch.ceil(bin_h) * torch.ceil(bin_w)).clamp(min=1).to(torch.int64)
    return Cost(int(((window - 1) * per_box).sum()), 0)


def nms_cost(n: int) -> Cost:
    """Upper bound: sort ``(n - 1) ceil(log2 n)`` + areas ``3n`` + ``13`` per pair of boxes."""
    if n == 0:
        return Cost(0, 0)
    return sort_cost(n, n) + Cost(3 * n + 13 * n * (n - 1) // 2, 0)


# [kept] = torchvision::nms(boxes [n, 4], scores [n], iou_threshold)
@aten_rule("torchvision::nms")
def nms(call: OpCall) -> Cost:
    return nms_cost(call.args[0].shape[0])


